"""The lab's registries: a primary and a pull-through cache per availability zone.

    root netns, on the switch address     lab host in AZ a
    primary  SWITCH_IP:P0  <─ proxy ──    cache(a) SWITCH_IP:Pa  <── dockerd pulls
                                          (registered with POST /v1/registries)

Everything lives under DIR/registry/ (one Distribution directory each, see
images/distribution.py); ``lab.json`` names them under ``registries`` before
they start, so ``lab down`` stops a half-built lab's registries too. They
speak plain HTTP on the lab's management subnet, so each host's dockerd gets
``--insecure-registry`` for each of them (``LabHost.extra``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.errors import DockyardError
from dockyard.images import distribution
from dockyard.lab.procs import LabError, free_port

if TYPE_CHECKING:
    from dockyard.lab.lab import Lab


def start(lab: Lab, azs: list[str]) -> None:
    """After: the primary and one cache per AZ answer; lab.json names them."""
    ip = lab.data["switch_ip"]
    root = lab.dir / "registry"
    primary = distribution.RegistryConfig(root / "primary", f"{ip}:{free_port(ip)}")
    caches = {
        az: distribution.RegistryConfig(
            root / f"az-{az}", f"{ip}:{free_port(ip)}", proxy_url=primary.url
        )
        for az in sorted(set(azs))
    }
    lab.data["registries"] = {
        "primary": {"root": str(primary.root), "url": primary.url},
        "caches": {az: {"root": str(c.root), "url": c.url} for az, c in caches.items()},
    }
    lab.save()
    for cfg in [primary, *caches.values()]:
        try:
            distribution.start(cfg)
        except DockyardError as exc:
            raise LabError(f"the registry at {cfg.url}: {exc.detail}") from exc


def server_args(data: dict[str, object]) -> list[str]:
    """``dockyard-server`` options naming the primary (none when the lab has no registry)."""
    regs = data.get("registries")
    if not isinstance(regs, dict):
        return []
    primary = regs["primary"]
    return ["--registry", primary["url"], "--registry-root", primary["root"]]


def insecure(data: dict[str, object]) -> list[str]:
    """HOST:PORT of every lab registry, for each lab dockerd's --insecure-registry."""
    regs = data.get("registries")
    if not isinstance(regs, dict):
        return []
    urls = [regs["primary"]["url"], *(c["url"] for c in regs["caches"].values())]
    return [u.split("://", 1)[1] for u in urls]


def register_caches(lab: Lab) -> None:
    """Tell the server which cache serves each AZ (`dockyard registry add --az`)."""
    for az, cache in lab.data.get("registries", {}).get("caches", {}).items():
        lab.api("POST", "/registries", {"availability_zone": az, "url": cache["url"]})


def stop(lab_dir: Path, data: dict[str, object]) -> None:
    """After: no lab registry runs and their data is gone (their logs stay)."""
    regs = data.get("registries")
    if not isinstance(regs, dict):
        return
    for reg in [regs["primary"], *regs["caches"].values()]:
        root = Path(reg["root"])
        if (root / "config.yml").exists():
            distribution.stop(distribution.load(root))
        shutil.rmtree(root / "data", ignore_errors=True)
        (root / "config.yml").unlink(missing_ok=True)
