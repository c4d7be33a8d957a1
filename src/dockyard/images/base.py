"""Debian machine-container base images.

    mmdebstrap --variant=minbase + supervisor, openssh-server, cron, rsyslog,
               python3, procps (+ --packages)           -> CACHE/debian-<key>.tar
    + the Dockyard layer (below)                         -> CACHE/<name>-<key>.tar
    -> uploaded as a rootfs image; each host imports it into its dockerd

The Dockyard layer: /usr/local/sbin/dockyard-init as PID 1 (host keys of the
instance's own, then supervisord in the foreground), supervisord programs
for sshd, cron, rsyslog and the image's own (--program), sshd taking root's
keys from /run/dockyard/authorized_keys (written by the agent from
``server create --ssh-key``), and the container tools in /usr/local/bin.
The Debian tarball is cached by release, package list and mirror; the layer
by its content, so a second build of the same recipe reads both from cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dockyard
from dockyard.errors import BadRequest
from dockyard.images import tarball

BASE_PACKAGES = ("supervisor", "openssh-server", "cron", "rsyslog", "python3", "procps")
SYSTEM_PROGRAMS = {
    "sshd": "/usr/sbin/sshd -D -e",
    "cron": "/usr/sbin/cron -f",
    "rsyslog": "/usr/sbin/rsyslogd -n -iNONE",
}
TOOLS = ("uptime", "free", "top", "df", "loadavg")
INIT_COMMAND = ["/usr/local/sbin/dockyard-init"]
PROGRAM_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,63}$")

INIT = b"""#!/bin/sh
# PID 1 of a Dockyard machine container.
set -e
# every instance gets host keys of its own on first boot (none are in the image)
ssh-keygen -A >/dev/null
mkdir -p /run/sshd /var/log/supervisor
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
"""
SSHD_CONFIG = b"""# Dockyard: root logs in with the keys given at `server create --ssh-key`
AuthorizedKeysFile .ssh/authorized_keys /run/dockyard/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
TOOL_WRAPPER = """#!/usr/bin/python3 -I
# Dockyard container tool: {name} of this container, not of the host.
import sys
sys.path.insert(0, "/usr/local/lib/dockyard")
from dockyard.tools.{name} import main
sys.exit(main())
"""


@dataclass(frozen=True)
class Recipe:
    name: str
    release: str = "bookworm"
    packages: tuple[str, ...] = ()
    programs: dict[str, str] = field(default_factory=dict)  # supervisord name -> command
    mirror: str | None = None

    def all_packages(self) -> list[str]:
        return sorted(set(BASE_PACKAGES) | set(self.packages))

    def key_processes(self) -> list[str]:
        return [*SYSTEM_PROGRAMS, *self.programs]


@dataclass(frozen=True)
class Built:
    path: Path
    debian_cached: bool
    layer_cached: bool
    seconds: float


def parse_program(spec: str) -> tuple[str, str]:
    name, sep, command = spec.partition("=")
    if not sep or not PROGRAM_NAME.match(name) or not command.strip():
        raise BadRequest(
            f"--program {spec!r}: write NAME=COMMAND, e.g. web='/usr/bin/python3 -m http.server'"
        )
    if name in SYSTEM_PROGRAMS:
        raise BadRequest(f"--program {name}: the image already runs {name}; pick another name")
    return name, command.strip()


def build(recipe: Recipe, cache: Path, log: Callable[[str], None] = print) -> Built:
    """The image's rootfs tarball in ``cache``, built or reused."""
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    debian = cache / f"debian-{recipe.release}-{_debian_key(recipe)}.tar"
    debian_cached = debian.is_file()
    if not debian_cached:
        _debootstrap(recipe, debian, log)
    layer = _layer_files(recipe)
    out = cache / f"{recipe.name}-{_layer_key(debian, layer)}.tar"
    layer_cached = out.is_file()
    if not layer_cached:
        log(f"adding the Dockyard layer -> {out.name}")
        _write_image(debian, layer, out)
    return Built(out, debian_cached, layer_cached, time.monotonic() - started)


def _debian_key(recipe: Recipe) -> str:
    text = json.dumps([recipe.release, recipe.all_packages(), recipe.mirror])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _layer_key(debian: Path, layer: dict[str, tuple[bytes, int]]) -> str:
    h = hashlib.sha256(debian.name.encode())
    for name in sorted(layer):
        data, mode = layer[name]
        h.update(f"{name}\0{mode}\0".encode() + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def _debootstrap(recipe: Recipe, dest: Path, log: Callable[[str], None]) -> None:
    if shutil.which("mmdebstrap") is None:
        raise BadRequest("mmdebstrap is not installed; apt-get install mmdebstrap")
    log(f"mmdebstrap {recipe.release} with {', '.join(recipe.all_packages())}")
    partial = dest.with_name(dest.stem + ".partial.tar")  # mmdebstrap picks its format by suffix
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--quiet",
        f"--include={','.join(recipe.all_packages())}",
        # no host keys in the image: instances sharing one would be indistinguishable
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        recipe.release,
        str(partial),
    ]
    if recipe.mirror:
        cmd.append(recipe.mirror)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except BaseException:  # interrupted: no half-built tarball left in the cache
        partial.unlink(missing_ok=True)
        raise
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise BadRequest(
            f"mmdebstrap failed (exit {done.returncode}); check --release, --packages and "
            f"the mirror:\n{tail}"
        )
    partial.rename(dest)


def _layer_files(recipe: Recipe) -> dict[str, tuple[bytes, int]]:
    """Path in the image -> (content, mode)."""
    files: dict[str, tuple[bytes, int]] = {
        "usr/local/sbin/dockyard-init": (INIT, 0o755),
        "etc/ssh/sshd_config.d/dockyard.conf": (SSHD_CONFIG, 0o644),
        "etc/supervisor/conf.d/dockyard.conf": (_supervisor_conf(recipe), 0o644),
        "etc/dockyard/image.json": (_image_json(recipe), 0o644),
    }
    src = Path(dockyard.__file__).parent
    modules = [src / "__init__.py", src / "cgroups" / "__init__.py"]
    modules += sorted((src / "procview").glob("*.py")) + sorted((src / "tools").glob("*.py"))
    for path in modules:
        rel = path.relative_to(src).as_posix()
        files[f"usr/local/lib/dockyard/dockyard/{rel}"] = (path.read_bytes(), 0o644)
    for tool in TOOLS:
        files[f"usr/local/bin/{tool}"] = (TOOL_WRAPPER.format(name=tool).encode(), 0o755)
    return files


def _supervisor_conf(recipe: Recipe) -> bytes:
    out = ["; Dockyard: the instance's key processes; monitoring watches these names"]
    for name, command in {**SYSTEM_PROGRAMS, **recipe.programs}.items():
        out += [
            f"[program:{name}]",
            f"command={command.replace('%', '%%')}",  # supervisord expands %(...)s
            "autorestart=true",
            "stopasgroup=true",
            "killasgroup=true",
            "",
        ]
    return "\n".join(out).encode()


def _image_json(recipe: Recipe) -> bytes:
    return json.dumps(
        {
            "name": recipe.name,
            "release": recipe.release,
            "packages": recipe.all_packages(),
            "key_processes": recipe.key_processes(),
            "dockyard": dockyard.__version__,
        },
        indent=2,
    ).encode()


def _write_image(debian: Path, layer: dict[str, tuple[bytes, int]], dest: Path) -> None:
    """Copy the Debian tarball, replacing and adding the layer's files."""
    partial = dest.with_name(dest.stem + ".partial.tar")
    try:
        _copy_with_layer(debian, layer, partial)
    except BaseException:
        partial.unlink(missing_ok=True)  # no half-written image left in the cache
        raise
    partial.rename(dest)


def _copy_with_layer(debian: Path, layer: dict[str, tuple[bytes, int]], partial: Path) -> None:
    ours = {f"./{name}" for name in layer}
    seen = set()
    with tarfile.open(debian) as src, tarfile.open(partial, "w") as out:
        for member in src:
            seen.add(member.name.rstrip("/"))
            if member.name in ours:
                continue
            stream = src.extractfile(member) if member.isfile() else None
            if member.name == "./etc/rsyslog.conf" and stream is not None:
                tarball.add_file(out, member.name, _no_kernel_log(stream.read()), member.mode)
                continue
            out.addfile(member, stream)
        tarball.add_dir(out, "./root/.ssh", 0o700)
        for name, (data, mode) in sorted(layer.items()):
            for parent in reversed(Path(name).parents[:-1]):
                if f"./{parent}" not in seen:
                    tarball.add_dir(out, f"./{parent}", 0o755)
                    seen.add(f"./{parent}")
            tarball.add_file(out, f"./{name}", data, mode)


def _no_kernel_log(conf: bytes) -> bytes:
    # a container may not read /proc/kmsg: rsyslog's imklog would log an error every start
    return conf.replace(b'\nmodule(load="imklog"', b'\n#module(load="imklog"')
