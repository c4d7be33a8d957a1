"""A Docker Distribution process (Debian's ``docker-registry``) of Dockyard's own.

    DIR/config.yml    rendered by ``render_config`` (JSON, which is YAML too; 0600:
                      a cache's holds the login it uses towards its primary)
    DIR/htpasswd      bcrypt entries of the logins (images/logins.py), when it has any
    DIR/dockyard.json where the logins and the primary's CA are (for ``load``)
    DIR/data/         storage.filesystem.rootdirectory
    DIR/registry.pid  the PID of ``docker-registry serve DIR/config.yml``
    DIR/registry.log  its output (0600: a cache's names its upstream URL, login included)

The primary registry (``dockyard up``, the lab) stores what ``image import``
pushes; an AZ's registry runs the same program with ``proxy.remoteurl`` set to
the primary, a pull-through cache. ``storage.delete.enabled`` lets ``image
delete`` remove manifests; ``garbage_collect`` then reclaims their blobs, which
Distribution allows only while nothing writes: it stops the registry, collects
and starts it again (a few hundred milliseconds of refused pulls, retried by
agents). The server calls it only while no push is in flight (db/registry_gc.py).

TLS: ``tls_cert``/``tls_key`` (a certificate from the cloud's CA, dockyard.pki). A
cache whose primary speaks TLS verifies it with ``upstream_ca``: Distribution is a
Go program, and Go's crypto/x509 reads the roots from ``SSL_CERT_FILE``, so the
cache runs with SSL_CERT_FILE=``upstream_ca``. Logins: with ``logins`` every
request needs one (``auth.htpasswd``, 401 otherwise), and a cache logs in to its
primary as the hosts (the login in ``proxy.remoteurl``: see ``_upstream``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dockyard.errors import Conflict
from dockyard.images import logins as registry_logins

PROGRAM = "docker-registry"


@dataclass(frozen=True)
class RegistryConfig:
    root: Path  # config, data, pid and log live here
    addr: str  # HOST:PORT it listens on
    proxy_url: str | None = None  # pull-through cache of this registry
    tls_cert: Path | None = None
    tls_key: Path | None = None
    logins: Path | None = None  # logins.json (images/logins.py): required logins
    upstream_ca: Path | None = None  # a cache: the CA its https primary's certificate is from

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.addr}"


def render_config(cfg: RegistryConfig) -> str:
    """Distribution's configuration for ``cfg`` (JSON is valid YAML)."""
    http: dict[str, Any] = {"addr": cfg.addr, "headers": {"X-Content-Type-Options": ["nosniff"]}}
    if cfg.tls_cert and cfg.tls_key:
        http["tls"] = {"certificate": str(cfg.tls_cert), "key": str(cfg.tls_key)}
    body: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "fields": {"service": "dockyard-registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(cfg.root / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": http,
    }
    if cfg.logins:
        body["auth"] = {"htpasswd": {"realm": "dockyard-registry", "path": str(htpasswd_path(cfg))}}
    if cfg.proxy_url:
        body["proxy"] = {"remoteurl": _upstream(cfg.proxy_url, cfg.logins)}
    return json.dumps(body, indent=2) + "\n"


def _upstream(url: str, logins: Path | None) -> str:
    """The primary's URL as a cache reaches it: with the hosts' login in it.

    Distribution 2.8's proxy.username/password answer only a bearer-token challenge
    (the credentials are keyed by the token realm), not htpasswd's Basic one. A
    login in the URL works: Go's HTTP client sends it as Basic auth, so the
    primary never challenges and the proxy's authorizer has nothing to answer."""
    if logins is None:
        return url
    hosts = registry_logins.read(logins).hosts
    parts = urlsplit(url)
    netloc = f"{quote(hosts.username, safe='')}:{quote(hosts.password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def htpasswd_path(cfg: RegistryConfig) -> Path:
    return cfg.root / "htpasswd"


def load(root: Path) -> RegistryConfig:
    """The configuration ``start`` wrote under ``root``."""
    try:
        body = json.loads((root / "config.yml").read_text())
        sidecar = root / "dockyard.json"  # absent: written before logins existed
        extra = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    except (OSError, ValueError) as exc:
        raise Conflict(f"no Dockyard registry configuration in {root}: {exc}") from exc
    tls = body["http"].get("tls") or {}
    return RegistryConfig(
        root=root,
        addr=body["http"]["addr"],
        proxy_url=_without_login((body.get("proxy") or {}).get("remoteurl")),
        tls_cert=Path(tls["certificate"]) if tls else None,
        tls_key=Path(tls["key"]) if tls else None,
        logins=Path(extra["logins"]) if extra.get("logins") else None,
        upstream_ca=Path(extra["upstream_ca"]) if extra.get("upstream_ca") else None,
    )


def _without_login(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def write_files(cfg: RegistryConfig) -> None:
    """config.yml, htpasswd (a fresh salt each start) and dockyard.json, all 0600."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / "data").mkdir(exist_ok=True)
    if cfg.logins:
        logins = registry_logins.read(cfg.logins)
        registry_logins.write_secret(htpasswd_path(cfg), registry_logins.htpasswd(logins))
    registry_logins.write_secret(cfg.config_path, render_config(cfg))
    paths = {"logins": cfg.logins, "upstream_ca": cfg.upstream_ca}
    extra = {k: str(v) if v else None for k, v in paths.items()}
    registry_logins.write_secret(cfg.root / "dockyard.json", json.dumps(extra) + "\n")


def start(cfg: RegistryConfig, timeout: float = 15.0) -> int:
    """After: the registry answers ``GET /v2/`` at ``cfg.url``; its PID is returned.
    One already running from ``cfg.root`` is kept."""
    running = pid(cfg)
    if running is not None:
        return running
    try:
        write_files(cfg)
    except ValueError as exc:  # a damaged logins file
        raise Conflict(str(exc)) from exc
    env = dict(os.environ)
    if cfg.upstream_ca:  # Go's crypto/x509 takes its roots from SSL_CERT_FILE
        env["SSL_CERT_FILE"] = str(cfg.upstream_ca)
    # 0600: a cache logs its upstream URL, login included, at start
    fd = os.open(cfg.root / "registry.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(cfg.root / "registry.log", 0o600)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            [PROGRAM, "serve", str(cfg.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    (cfg.root / "registry.pid").write_text(f"{proc.pid}\n")
    _wait_ready(cfg, proc, timeout)
    return proc.pid


def stop(cfg: RegistryConfig, timeout: float = 10.0) -> None:
    """After: the registry of ``cfg.root`` is not running. Already stopped: nothing to do."""
    found = pid(cfg)
    if found is not None:
        os.kill(found, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(found, cfg) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(found, cfg):
            os.kill(found, signal.SIGKILL)
    (cfg.root / "registry.pid").unlink(missing_ok=True)


def garbage_collect(cfg: RegistryConfig) -> str:
    """Reclaim blobs no manifest names. Distribution requires that nothing writes
    meanwhile, so a running registry is stopped for it and started again."""
    was_running = pid(cfg) is not None
    stop(cfg)
    try:
        done = subprocess.run(
            [PROGRAM, "garbage-collect", "--delete-untagged", str(cfg.config_path)],
            capture_output=True,
            text=True,
        )
    finally:
        if was_running:
            start(cfg)
    if done.returncode != 0:
        raise Conflict(f"registry garbage collection failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def pid(cfg: RegistryConfig) -> int | None:
    """The PID of the registry serving ``cfg.root``, if one runs."""
    try:
        found = int((cfg.root / "registry.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return found if _alive(found, cfg) else None


def _alive(found: int, cfg: RegistryConfig) -> bool:
    try:
        os.waitpid(found, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: started by an earlier command
    try:
        line = Path(f"/proc/{found}/cmdline").read_bytes()
        state = Path(f"/proc/{found}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    # a PID the kernel gave to someone else since is not ours
    return state != "Z" and str(cfg.config_path).encode() in line


def _wait_ready(cfg: RegistryConfig, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (cfg.root / "registry.log").read_text(errors="replace")[-600:]
            tail = re.sub(r"//[^/@\s]+@", "//***@", tail)  # a cache logs its upstream's login
            raise Conflict(f"{PROGRAM} exited ({proc.returncode}) at start:\n{tail}")
        try:
            urllib.request.urlopen(f"http://{cfg.addr}/v2/", timeout=1).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # it answers (400 to plain HTTP when it speaks TLS, 401 without a login)
        except OSError:
            time.sleep(0.05)
    stop(cfg)
    raise Conflict(f"{PROGRAM} did not answer at {cfg.url} within {timeout:.0f}s")
