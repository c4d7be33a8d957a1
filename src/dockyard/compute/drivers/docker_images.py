"""Images on the Docker host: import, pull by digest, commit, flatten, push, build,
remove (the Docker driver's images; compute/drivers/docker.py holds its containers).

Each image a container is made from is made present once (``ensure_image``), under
a lock of its own so that twenty creates of one new image import or pull it once; a
ref seen present is remembered until it is removed (``forget`` when dockerd says it
vanished).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event
from typing import IO, Any, cast

import docker
import docker.errors
import docker.utils
import requests.exceptions

from dockyard.compute.driver import BuildSpec, container_name
from dockyard.compute.drivers import docker_build
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.model import RegistryLogin

CERTS_D = Path("/etc/docker/certs.d")  # where dockerd finds each registry's CA

log = logging.getLogger(__name__)
# no connection, or no answer within the client's timeout (a wedged dockerd): both
# mean "dockerd is not answering", a TemporaryError, never an agent crash
CONN = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def down(exc: Exception) -> TemporaryError:
    return TemporaryError(f"dockerd is not answering: {exc}")


class DockerImages:
    """The images of the dockerd behind ``api`` (the SDK's low-level client)."""

    def __init__(self, api: docker.APIClient, registry_ca: Path | None = None) -> None:
        """``registry_ca``: before pulling from or pushing to HOST:PORT, make sure this
        (local) dockerd trusts that CA there (see trust_registry)."""
        self.api = api
        self._registry_ca = registry_ca
        self._locks: dict[str, threading.Lock] = {}
        self._known: set[str] = set()  # refs known to be present
        self._guard = threading.Lock()

    def forget(self, ref: str) -> None:
        """``ref`` vanished behind our back: the next ``ensure_image`` looks again."""
        self._known.discard(ref)

    def ensure_image(
        self,
        ref: str,
        fetch_rootfs: Callable[[Path], None] | None,
        command: list[str] | None,
        pulls: Sequence[str] = (),
        login: RegistryLogin | None = None,
    ) -> None:
        if ref in self._known:
            return
        with self._guard:
            lock = self._locks.setdefault(ref, threading.Lock())
        with lock:
            if not self._has_image(ref):
                if pulls:
                    self._pull(ref, pulls, login)
                elif fetch_rootfs is not None:
                    self._import(ref, fetch_rootfs, command)
                else:
                    raise PermanentError(
                        f"image {ref} is not on this host's dockerd; load it there or import "
                        "the image with --rootfs so hosts can fetch it"
                    )
            self._known.add(ref)

    def _has_image(self, ref: str) -> bool:
        try:
            self.api.inspect_image(ref)  # type: ignore[no-untyped-call]
            return True
        except docker.errors.ImageNotFound:
            return False
        except (*CONN, docker.errors.APIError) as exc:
            raise down(exc) from exc

    def _pull(self, ref: str, pulls: Sequence[str], login: RegistryLogin | None) -> None:
        """Pull by digest from the first source that has it; name the result ``ref``.
        The login travels in the X-Registry-Auth header, never on a command line."""
        auth = {"username": login.username, "password": login.password} if login else None
        failures = []
        for source in pulls:
            if self._registry_ca is not None:
                trust_registry(CERTS_D, self._registry_ca, source)
            try:
                # REPO@sha256:...: the daemon checks the digest
                self.api.pull(source, auth_config=auth)
                if self._has_image(source):
                    repo, _, tag = ref.rpartition(":")
                    self.api.tag(source, repo, tag)
                    log.info("pulled image %s as %s", source, ref)
                    return
                failures.append(f"{source}: not there after the pull")
            except docker.errors.APIError as exc:
                failures.append(f"{source}: {exc.explanation or exc}")
            except CONN as exc:
                raise down(exc) from exc
        raise TemporaryError(
            f"could not pull image {ref} ({'; '.join(failures)}); a registry over plain HTTP "
            "needs dockerd's --insecure-registry HOST:PORT, one over TLS its CA in "
            "/etc/docker/certs.d/HOST:PORT/ca.crt (the agent's --trust-registries puts it "
            'there), and "no basic auth credentials" means the server was started '
            "without --registry-logins"
        )

    def _import(self, ref: str, fetch: Callable[[Path], None], command: list[str] | None) -> None:
        repo, _, tag = ref.rpartition(":")
        changes = [f"CMD {json.dumps(command)}"] if command else None
        with tempfile.TemporaryDirectory(prefix="dockyard-image-") as tmp:
            path = Path(tmp) / "rootfs.tar"
            fetch(path)
            try:
                self.api.import_image_from_file(
                    str(path), repository=repo, tag=tag, changes=changes
                )
            except docker.errors.APIError as exc:
                raise PermanentError(f"dockerd refused the rootfs of {ref}: {exc}") from exc
        log.info("imported image %s", ref)

    # --- snapshots

    def commit(self, instance_id: str, ref: str) -> int:
        repo, _, tag = ref.rpartition(":")
        try:
            self.api.commit(container_name(instance_id), repository=repo, tag=tag, pause=True)
        except docker.errors.NotFound as exc:
            raise PermanentError(f"no container for instance {instance_id}") from exc
        except docker.errors.APIError as exc:
            raise _refused("commit", exc) from exc
        except CONN as exc:
            raise down(exc) from exc
        return self.layers(ref)

    def flatten(self, ref: str) -> int:
        """A container made (never started) from ``ref`` is exported and its tar streamed
        into an import with the image's config: one layer, the same files."""
        old = self._image(ref)
        if len(old["RootFS"]["Layers"]) == 1:
            return 1
        repo, _, tag = ref.rpartition(":")
        name = f"dy-flatten-{os.urandom(6).hex()}"
        try:
            self.api.create_container(ref, name=name, command=["/flatten"], network_disabled=True)
            stream = self.api.export(name)
            self.api.import_image_from_data(stream, repo, tag, _changes(old["Config"] or {}))
            self.api.remove_image(old["Id"], force=True)
        except docker.errors.APIError as exc:
            raise _refused("flatten", exc) from exc
        except CONN as exc:
            raise down(exc) from exc
        finally:
            with contextlib.suppress(*CONN, docker.errors.APIError):
                self.api.remove_container(name, force=True, v=True)
        return self.layers(ref)

    def push(self, ref: str, login: RegistryLogin | None = None, halt: Event | None = None) -> str:
        if self._registry_ca is not None:
            trust_registry(CERTS_D, self._registry_ca, ref)
        repo, _, tag = ref.rpartition(":")
        # {} rather than None: the SDK would send root's ~/.docker/config.json login
        auth = {"username": login.username, "password": login.password} if login else {}
        stop = halt or Event()
        digest = None
        try:
            stream = self.api.push(repo, tag, stream=True, decode=True, auth_config=auth)
            watch = docker_build.stopped_by(stop, docker_build.response_of(stream))
            with watch if halt is not None else contextlib.nullcontext():
                for line in stream:
                    if "error" in line:
                        raise _push_failed(ref, str(line["error"]))
                    digest = (line.get("aux") or {}).get("Digest") or digest
        except docker.errors.APIError as exc:
            raise _push_failed(ref, str(exc.explanation or exc)) from exc
        except docker_build.BROKEN as exc:
            if not stop.is_set():
                raise down(exc) from exc
        if stop.is_set():
            raise PermanentError(f"the push of {ref} was stopped")
        if digest is None:
            raise TemporaryError(f"dockerd pushed {ref} but named no digest; will retry")
        log.info("pushed %s as %s", ref, digest)
        return str(digest)

    def remove_image(self, ref: str, prune: bool = True) -> None:
        self._known.discard(ref)
        try:
            self.api.remove_image(ref, noprune=not prune)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise TemporaryError(f"dockerd could not remove image {ref}: {exc}") from exc
        except CONN as exc:
            raise down(exc) from exc

    def build(self, spec: BuildSpec, output: Callable[[str], None], halt: Event) -> str:
        if self._registry_ca is not None:  # a FROM in the cloud's registry
            trust_registry(CERTS_D, self._registry_ca, spec.ref)
        return docker_build.build(self.api, spec, output, halt, _context)

    def layers(self, ref: str) -> int:
        return len(self._image(ref)["RootFS"]["Layers"])

    def _image(self, ref: str) -> dict[str, Any]:
        try:
            return dict(self.api.inspect_image(ref))  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound as exc:
            raise PermanentError(f"no image {ref} on this host") from exc
        except (*CONN, docker.errors.APIError) as exc:
            raise down(exc) from exc


def _refused(what: str, exc: docker.errors.APIError) -> DockyardError:
    if exc.status_code and exc.status_code >= 500:
        return TemporaryError(f"dockerd could not {what} the image: {exc}")
    return PermanentError(f"dockerd refused to {what} the image: {exc.explanation}")


def _push_failed(ref: str, message: str) -> DockyardError:
    """Refusals (a login, a name) stay refused; the rest (a registry away) may pass later."""
    lowered = message.lower()
    if any(w in lowered for w in ("denied", "unauthorized", "authentication", "invalid")):
        return PermanentError(f"the registry refused the push of {ref}: {message}")
    return TemporaryError(f"could not push {ref}: {message}")


def _context(path: Path, dockerfile: str) -> IO[bytes]:
    """A build's context as the SDK's ``build`` makes it: the tree as a tar, without
    what .dockerignore names."""
    ignore = path / ".dockerignore"
    exclude = None
    if ignore.is_file():
        lines = (line.strip() for line in ignore.read_text("utf-8", "replace").splitlines())
        exclude = [line for line in lines if line and not line.startswith("#")]
    made = docker.utils.tar(path, exclude=exclude, dockerfile=(dockerfile, None))
    return cast(IO[bytes], made)  # a temporary file, when no fileobj is given


def _changes(config: dict[str, Any]) -> list[str]:
    """Dockerfile instructions that give an imported image ``config`` (what commit kept)."""
    out = [
        f"ENV {k}={json.dumps(v, ensure_ascii=False)}"
        for k, _, v in (e.partition("=") for e in config.get("Env") or [])
    ]
    for key, word in (("Cmd", "CMD"), ("Entrypoint", "ENTRYPOINT")):
        if config.get(key):
            out.append(f"{word} {json.dumps(config[key])}")
    for key, word in (("WorkingDir", "WORKDIR"), ("User", "USER"), ("StopSignal", "STOPSIGNAL")):
        if config.get(key):
            out.append(f"{word} {config[key]}")
    labels = (config.get("Labels") or {}).items()
    out += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels]
    return out


def trust_registry(certs_d: Path, ca: Path, source: str) -> None:
    """After: ``certs_d/HOST:PORT/ca.crt`` exists for the registry of ``source``
    (``HOST:PORT/REPO@sha256:...``); dockerd reads it at each pull, so no restart. One
    already there (written by an operator, or the lab) is kept as it is."""
    target = certs_d / source.split("/", 1)[0] / "ca.crt"
    if target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name("ca.crt.part")
        shutil.copyfile(ca, partial)
        os.replace(partial, target)  # a pull never reads half a certificate
    except OSError as exc:
        raise PermanentError(
            f"cannot write {target} for dockerd to trust the registry: {exc}; run the agent "
            "as root, or put the cloud's CA there yourself"
        ) from exc
