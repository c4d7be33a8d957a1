"""The lab's registries: a primary and a pull-through cache per availability zone.

    root netns, on the switch address     lab host in AZ a
    primary  SWITCH_IP:P0  <─ proxy ──    cache(a) SWITCH_IP:Pa  <── dockerd pulls
                                          (registered with POST /v1/registries)

Everything lives under DIR/registry/ (one Distribution directory each, see
images/distribution.py); ``lab.json`` names them under ``registries`` before
they start, so ``lab down`` stops a half-built lab's registries too.

They speak TLS with one certificate from the lab's CA (DIR/tls/registry.pem, for
the switch address) and require a login (DIR/registry/logins.json, shared by all:
the server pushes as ``dockyard``, agents and the caches pull as
``dockyard-hosts``). A cache verifies its primary with the CA (SSL_CERT_FILE).
Every lab dockerd trusts the CA for each registry address through
/etc/docker/certs.d/HOST:PORT/ca.crt, which dockerd reads at each pull; the lab
writes those at ``lab up`` and removes at ``lab down`` only the ones it made
(``certs_d`` in lab.json).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from dockyard import pki
from dockyard.errors import DockyardError
from dockyard.images import distribution, logins
from dockyard.lab.procs import LabError, free_port


class Lab(Protocol):
    """What the registries need of a lab (lab.Lab), without importing it back."""

    dir: Path
    data: dict[str, Any]

    def save(self) -> None: ...

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Any: ...

CERTS_D = Path("/etc/docker/certs.d")  # where dockerd looks for a registry's CA


def start(lab: Lab, azs: list[str]) -> None:
    """After: the primary and one cache per AZ answer over TLS; lab.json names them."""
    ip = lab.data["switch_ip"]
    root = lab.dir / "registry"
    tls = pki.ensure_server_cert(lab.dir / "tls", [ip], stem="registry")
    logins_file = root / "logins.json"
    logins.ensure(logins_file)
    primary = distribution.RegistryConfig(
        root / "primary",
        f"{ip}:{free_port(ip)}",
        tls_cert=tls.cert,
        tls_key=tls.key,
        logins=logins_file,
    )
    caches = {  # the same certificate and logins; the CA to verify the primary with
        az: replace(
            primary,
            root=root / f"az-{az}",
            addr=f"{ip}:{free_port(ip)}",
            proxy_url=primary.url,
            upstream_ca=tls.ca,
        )
        for az in sorted(set(azs))
    }
    lab.data["registries"] = {
        "primary": {"root": str(primary.root), "url": primary.url},
        "caches": {az: {"root": str(c.root), "url": c.url} for az, c in caches.items()},
        "logins": str(logins_file),
        "certs_d": [],
    }
    lab.save()
    for cfg in [primary, *caches.values()]:
        _trust(lab, cfg.addr, tls.ca)
        try:
            distribution.start(cfg)
        except DockyardError as exc:
            raise LabError(f"the registry at {cfg.url}: {exc.detail}") from exc


def _trust(lab: Lab, addr: str, ca: Path) -> None:
    """/etc/docker/certs.d/ADDR/ca.crt: every dockerd on this machine trusts the lab's
    CA for ``addr``. Recorded before it is written, so `lab down` finds it."""
    where = CERTS_D / addr
    if where.exists():
        raise LabError(f"{where} exists already (another lab's?); remove it or pick a port")
    made = lab.data["registries"]["certs_d"]
    made += [str(d) for d in (CERTS_D, where) if not d.exists()]  # /etc/docker/certs.d too
    lab.save()
    where.mkdir(parents=True)
    shutil.copyfile(ca, where / "ca.crt")


def server_args(data: dict[str, Any]) -> list[str]:
    """``dockyard-server`` options naming the primary and the logins (none when the lab
    has no registry); the server verifies it with its --tls-ca, the lab's CA."""
    regs = data.get("registries")
    if not isinstance(regs, dict):
        return []
    primary = regs["primary"]
    return [
        "--registry", primary["url"], "--registry-root", primary["root"],
        "--registry-logins", regs["logins"],
    ]  # fmt: skip


def register_caches(lab: Lab) -> None:
    """Tell the server which cache serves each AZ (`dockyard registry add --az`)."""
    for az, cache in lab.data.get("registries", {}).get("caches", {}).items():
        lab.api("POST", "/registries", {"availability_zone": az, "url": cache["url"]})


def stop(lab_dir: Path, data: dict[str, Any]) -> None:
    """After: no lab registry runs, their data and logins are gone (their logs stay), and
    the certs.d directories the lab made are removed."""
    regs = data.get("registries")
    if not isinstance(regs, dict):
        return
    for made in reversed(regs.get("certs_d", [])):  # the registries' dirs, then certs.d
        (Path(made) / "ca.crt").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else put a file there
            Path(made).rmdir()
    for reg in [regs["primary"], *regs["caches"].values()]:
        root = Path(reg["root"])
        if (root / "config.yml").exists():
            distribution.stop(distribution.load(root))
        shutil.rmtree(root / "data", ignore_errors=True)
        for secret in ("config.yml", "htpasswd", "dockyard.json"):
            (root / secret).unlink(missing_ok=True)
    if regs.get("logins"):
        Path(regs["logins"]).unlink(missing_ok=True)
