"""A Docker Distribution process (Debian's ``docker-registry``) of Dockyard's own.

    DIR/config.yml   rendered by ``render_config`` (JSON, which is YAML too)
    DIR/data/        storage.filesystem.rootdirectory
    DIR/registry.pid the PID of ``docker-registry serve DIR/config.yml``
    DIR/registry.log its output

The primary registry (``dockyard up``, the lab) stores what ``image import``
pushes; an AZ's registry runs the same program with ``proxy.remoteurl`` set to
the primary, a pull-through cache. ``storage.delete.enabled`` lets ``image
delete`` remove manifests; ``garbage_collect`` then reclaims their blobs, which
Distribution allows only while nothing writes: it stops the registry, collects
and starts it again (a few hundred milliseconds of refused pulls, retried by
agents).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.errors import Conflict

PROGRAM = "docker-registry"


@dataclass(frozen=True)
class RegistryConfig:
    root: Path  # config, data, pid and log live here
    addr: str  # HOST:PORT it listens on
    proxy_url: str | None = None  # pull-through cache of this registry
    tls_cert: Path | None = None
    tls_key: Path | None = None

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
    if cfg.proxy_url:
        body["proxy"] = {"remoteurl": cfg.proxy_url}
    return json.dumps(body, indent=2) + "\n"


def load(root: Path) -> RegistryConfig:
    """The configuration ``render_config`` wrote under ``root``."""
    try:
        body = json.loads((root / "config.yml").read_text())
    except (OSError, ValueError) as exc:
        raise Conflict(f"no Dockyard registry configuration in {root}: {exc}") from exc
    tls = body["http"].get("tls") or {}
    return RegistryConfig(
        root=root,
        addr=body["http"]["addr"],
        proxy_url=(body.get("proxy") or {}).get("remoteurl"),
        tls_cert=Path(tls["certificate"]) if tls else None,
        tls_key=Path(tls["key"]) if tls else None,
    )


def start(cfg: RegistryConfig, timeout: float = 15.0) -> int:
    """After: the registry answers ``GET /v2/`` at ``cfg.url``; its PID is returned.
    One already running from ``cfg.root`` is kept."""
    running = pid(cfg)
    if running is not None:
        return running
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / "data").mkdir(exist_ok=True)
    cfg.config_path.write_text(render_config(cfg))
    with (cfg.root / "registry.log").open("ab") as log:
        proc = subprocess.Popen(
            [PROGRAM, "serve", str(cfg.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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
