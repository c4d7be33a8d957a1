"""What an instance runs beyond its image: environment, config files, a health check,
and the health the agent observes.

The PaaS (apps, stacks, releases) sets these on its instances; the agent applies
them when it (re)creates the container and runs the check on its own clock:

    DesiredInstance.env / .files / .health_check / .rebuild_seq   server -> agent
    InstanceReport.health                                          agent -> server
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from dockyard.model.base import RESERVED_INSTANCE_PATHS, Schema

MAX_ENV = 128  # variables per instance
MAX_ENV_BYTES = 64 * 1024  # all of them: they travel in every desired state of the host
MAX_FILES = 32  # config files per instance
MAX_FILE_BYTES = 64 * 1024  # one config file's text
AGENT_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")  # bind-mounted by the agent
MAX_FILES_BYTES = 256 * 1024  # all of them: they travel in every desired state of the host


def _env_key(text: str) -> str:
    if not text or not (text[0].isalpha() or text[0] == "_"):
        raise ValueError(f"{text!r} is not a variable name; start it with a letter or '_'")
    if not all(c.isalnum() or c == "_" for c in text) or not text.isascii():
        raise ValueError(f"{text!r} is not a variable name; use letters, digits and '_'")
    return text


def _env_fits(env: dict[str, str]) -> dict[str, str]:
    total = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if total > MAX_ENV_BYTES:
        raise ValueError(
            f"the environment holds {total} bytes, more than {MAX_ENV_BYTES}; put large "
            "values in a config file or the image"
        )
    return env


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a NUL character cannot be in an environment value; remove it")
    return text


def _file_path(text: str) -> str:
    """An absolute, normalised path of a regular file, outside what the agent mounts."""
    if not text.startswith("/") or text.endswith("/"):
        raise ValueError(f"{text!r} is not a file path; write an absolute path like /etc/app.conf")
    if any(part in ("", ".", "..") for part in text.split("/")[1:]):
        raise ValueError(f"{text!r} is not normalised; write it without '.', '..' or '//'")
    if any(ord(ch) < 32 for ch in text):
        raise ValueError(f"{text!r} holds a control character; rename the file")
    for agents in AGENT_FILES:
        if text == agents or text.startswith(agents + "/"):
            raise ValueError(
                f"the agent writes {agents} (from the instance's network and hostname); "
                "configure the application elsewhere"
            )
    for reserved in RESERVED_INSTANCE_PATHS:
        if _at_or_under(text, reserved) or _at_or_under(reserved, text):
            raise ValueError(f"{text!r} is at or over {reserved}; put the file in /etc or /srv")
    return text


def _at_or_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def clash_with_mounts(files: list[ConfigFile], mounts: list[str]) -> str | None:
    """Why a config file cannot go where it asks (at, under or over a mount point:
    written there it would replace or land in the volume's data), or None."""
    for f in files:
        for mount in mounts:
            if _at_or_under(f.path, mount) or _at_or_under(mount, f.path):
                return (
                    f"the config file {f.path} is at or under the mount point {mount} "
                    "(a volume's data); put it outside the instance's volumes"
                )
    return None


EnvKey = Annotated[str, Field(max_length=255), AfterValidator(_env_key)]
EnvValue = Annotated[str, Field(max_length=32 * 1024), AfterValidator(_no_nul)]
FilePath = Annotated[str, Field(max_length=1024), AfterValidator(_file_path)]


class ConfigFile(Schema):
    """A file the agent writes into the instance's root fs before its container starts."""

    path: FilePath
    content: str = Field(max_length=MAX_FILE_BYTES, description="the file's text (UTF-8)")
    mode: int = Field(default=0o644, ge=0, le=0o777, description="permission bits")


class HealthCheck(Schema):
    """How the agent decides an instance is healthy.

    http: GET http://IP:PORT/PATH from the host side answers 2xx or 3xx;
    tcp: a connection to IP:PORT is accepted; cmd: the command exits 0 inside.
    """

    kind: Literal["http", "tcp", "cmd"]
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str = Field(default="/", max_length=1024, pattern=r"^/[\x21-\x7e]*$")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, min_length=1, max_length=64
    )
    interval_s: float = Field(default=2.0, ge=0.2, le=300)
    timeout_s: float = Field(default=2.0, ge=0.1, le=60)
    start_period_s: float = Field(
        default=0, ge=0, le=3600, description="failures in this time after a start do not count"
    )
    unhealthy_after: int = Field(
        default=3, ge=1, le=100, description="consecutive failures that make it unhealthy"
    )

    @model_validator(mode="after")
    def _complete(self) -> HealthCheck:
        if self.kind in ("http", "tcp") and self.port is None:
            raise ValueError(f"a {self.kind} health check needs a port")
        if self.kind == "cmd" and not self.command:
            raise ValueError("a cmd health check needs a command")
        return self


class Health(Schema):
    """What the agent saw of an instance's health check, in its report."""

    status: Literal["starting", "healthy", "unhealthy"]
    failures: int = Field(default=0, ge=0, description="consecutive failed checks")
    detail: str = Field(default="", max_length=512, description="the last failure, if any")


Env = Annotated[dict[EnvKey, EnvValue], Field(max_length=MAX_ENV), AfterValidator(_env_fits)]


def counts(container_seq: int | None, rebuild_seq: int, rebuilding: bool) -> bool:
    """Whether a running container's health is the instance's: the container made for
    the current ``rebuild_seq``, or, when no rebuild is in flight, whichever runs -- after
    a failed rebuild the old container (made for an earlier sequence) runs on, and its
    health is the instance's (server's fold_report and agent's checks agree on this)."""
    return container_seq is None or container_seq == rebuild_seq or not rebuilding


def _files_fit(files: list[ConfigFile]) -> list[ConfigFile]:
    paths = [f.path for f in files]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"two config files at {', '.join(twice)}; give each path once")
    total = sum(len(f.content.encode()) for f in files)
    if total > MAX_FILES_BYTES:
        raise ValueError(
            f"the config files hold {total} bytes, more than {MAX_FILES_BYTES}; put large "
            "data in the image or a volume"
        )
    return files


Files = Annotated[list[ConfigFile], Field(max_length=MAX_FILES), AfterValidator(_files_fit)]
