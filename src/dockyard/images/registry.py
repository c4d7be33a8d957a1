"""A small client of the Registry HTTP API v2 (Docker Distribution).

    rootfs.tar --gzip--> layer blob (digest)          diff_id = sha256 of the tar
    config JSON (architecture, os, rootfs.diff_ids, config.Cmd) -> config blob
    schema2 manifest naming both                      -> PUT /v2/REPO/manifests/TAG
                                                         = the image's digest

A blob upload is ``POST /v2/REPO/blobs/uploads/`` then ``PUT <location>?digest=``;
a blob the registry already has (``HEAD``) is not sent again. Hosts then pull
``HOST:PORT/REPO@sha256:...`` through their dockerd. The pure pieces
(``image_config``, ``manifest``, ``pull_ref``) are separate from the I/O.

Errors: an unreachable registry or a 5xx is a ``TemporaryError`` (retry later); a
refusal (4xx) is a ``PermanentError`` that quotes the registry's own message.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from dockyard.errors import PermanentError, TemporaryError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:...
    size: int


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str  # the manifest's: what hosts pull by
    size: int  # config + layer, as the registry stores them


@dataclass(frozen=True)
class Tagged:
    repository: str
    tag: str
    digest: str
    size: int
    pushed: str | None  # the image config's "created"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def image_config(diff_id: str, cmd: list[str] | None, created: str, arch: str) -> bytes:
    """The image config of a one-layer image (its digest is the image id)."""
    config: dict[str, Any] = {"Cmd": cmd} if cmd else {}
    body = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "dockyard image import"}],
    }
    return json.dumps(body, sort_keys=True).encode()


def manifest(config: Blob, layer: Blob, media: str = LAYER_GZIP) -> bytes:
    """A schema2 manifest of one config and one layer (gzipped unless ``media`` says)."""
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": media, "size": layer.size, "digest": layer.digest}],
    }
    return json.dumps(body, sort_keys=True).encode()


def pull_ref(url: str, repository: str, digest: str) -> str:
    """What dockerd pulls: ``HOST:PORT/REPO@sha256:...`` for a registry at ``url``."""
    return f"{urlsplit(url).netloc}/{repository}@{digest}"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def compress_layer(rootfs: Path, dest: Path, level: int = 6) -> tuple[Blob, str]:
    """Gzip ``rootfs`` into ``dest``; the layer blob and the diff_id (sha256 of the tar).

    gzip's header carries no name and no time, so one tar always gives one digest
    and a second push finds the blob already there. ``level`` 0 stores without
    compressing (still gzip, as pulls expect)."""
    plain = hashlib.sha256()
    with rootfs.open("rb") as src, dest.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz:
            while chunk := src.read(CHUNK):
                plain.update(chunk)
                gz.write(chunk)
    packed = hashlib.sha256()
    with dest.open("rb") as f:
        while chunk := f.read(CHUNK):
            packed.update(chunk)
    blob = Blob("sha256:" + packed.hexdigest(), dest.stat().st_size)
    return blob, "sha256:" + plain.hexdigest()


class Registry:
    """One registry at ``url`` (``http://HOST:PORT`` or ``https://...``)."""

    def __init__(
        self,
        url: str,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, auth=auth, verify=verify, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- pushing

    def push_rootfs(
        self,
        repository: str,
        tag: str,
        rootfs: Path,
        cmd: list[str] | None,
        created: str,
        level: int | None = 6,
    ) -> Pushed:
        """After: ``REPO:TAG`` names a one-layer image of ``rootfs`` (gzip ``level``;
        None: the tar as it is, an uncompressed layer); its digest returned."""
        layer, diff_id, media = self._push_layer(repository, rootfs, level)
        config = image_config(diff_id, cmd, created, architecture())
        config_blob = Blob(sha256_digest(config), len(config))
        self._push_blob_bytes(repository, config_blob, config)
        digest = self._put_manifest(repository, tag, manifest(config_blob, layer, media))
        return Pushed(repository, tag, digest, config_blob.size + layer.size)

    def push_layer_on(
        self,
        base: str,
        repository: str,
        tag: str,
        layer_tar: Path,
        created: str,
        level: int | None = None,
    ) -> Pushed:
        """After: ``REPO:TAG`` names the image ``base`` (``REPO@sha256:...`` in this
        registry, schema2) with ``layer_tar`` (a layer in image format: ``.wh.``
        whiteouts) on top; its digest returned. The base's layers are mounted from its
        repository, never sent again; the new layer goes as it is (an uncompressed
        layer: one pass to hash it, none to pack it; dockerd pulls it as such), or
        gzipped at ``level``."""
        base_repo, _, base_digest = base.partition("@")
        r = self._call(
            "GET", f"/v2/{base_repo}/manifests/{base_digest}", headers={"Accept": MANIFEST_V2}
        )
        body = r.json()
        if body.get("mediaType") != MANIFEST_V2 or sha256_digest(r.content) != base_digest:
            raise PermanentError(f"{base} is not a schema2 manifest of this registry")
        config = self._call("GET", f"/v2/{base_repo}/blobs/{body['config']['digest']}").json()
        for layer in body["layers"]:
            self._mount(repository, layer["digest"], base_repo)
        blob, diff_id, media = self._push_layer(repository, layer_tar, level)
        config["rootfs"]["diff_ids"].append(diff_id)
        config["created"] = created
        config.setdefault("history", []).append({"created": created, "created_by": "dockyard move"})
        raw = json.dumps(config, sort_keys=True).encode()
        config_blob = Blob(sha256_digest(raw), len(raw))
        self._push_blob_bytes(repository, config_blob, raw)
        body["config"] = {**body["config"], "size": config_blob.size, "digest": config_blob.digest}
        body["layers"].append({"mediaType": media, "size": blob.size, "digest": blob.digest})
        digest = self._put_manifest(repository, tag, json.dumps(body, sort_keys=True).encode())
        return Pushed(repository, tag, digest, config_blob.size + blob.size)

    def _push_layer(self, repository: str, tar: Path, level: int | None) -> tuple[Blob, str, str]:
        """The layer ``tar`` as a blob of ``repository``: as it is (an uncompressed
        layer), or gzipped at ``level``. Returns the blob, its diff_id, its media type."""
        blob, media = Blob(file_digest(tar), tar.stat().st_size), LAYER_TAR
        diff_id = blob.digest
        with tempfile.TemporaryDirectory(prefix="dockyard-layer-") as tmp:
            if level is not None:
                gz, media = Path(tmp) / "layer.tar.gz", LAYER_GZIP
                blob, diff_id = compress_layer(tar, gz, level)
            self._push_blob_file(repository, blob, tar if level is None else gz)
        return blob, diff_id, media

    def _put_manifest(self, repository: str, tag: str, body: bytes) -> str:
        """``REPO:TAG`` names the schema2 manifest ``body``; its digest."""
        r = self._call(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            content=body,
            headers={"Content-Type": MANIFEST_V2},
            ok=(201,),
        )
        return r.headers.get("Docker-Content-Digest") or sha256_digest(body)

    def layer_count(self, pull: str) -> int:
        """How many layers the image ``REPO@sha256:...`` has in this registry."""
        repo, _, digest = pull.partition("@")
        r = self._call("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_V2})
        return len(r.json().get("layers") or [])

    def _mount(self, repository: str, digest: str, source: str) -> None:
        """The blob ``digest`` of ``source`` also in ``repository``, without sending it."""
        if repository == source:
            return
        r = self._call(
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
            ok=(201, 202),
        )
        if r.status_code == 202:  # the registry would not mount it: no partial upload kept
            self._call("DELETE", r.headers["Location"], ok=(204, 404))
            raise TemporaryError(f"registry {self.url} would not mount {digest} from {source}")

    def has_blob(self, repository: str, digest: str) -> bool:
        r = self._call("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        return r.status_code == 200

    def _push_blob_bytes(self, repository: str, blob: Blob, data: bytes) -> None:
        if not self.has_blob(repository, blob.digest):
            self._upload(repository, blob, data)

    def _push_blob_file(self, repository: str, blob: Blob, path: Path) -> None:
        if self.has_blob(repository, blob.digest):
            return
        with path.open("rb") as f:
            self._upload(repository, blob, iter(lambda: f.read(CHUNK), b""))

    def _upload(self, repository: str, blob: Blob, content: Any) -> None:
        start = self._call("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,))
        location = start.headers["Location"]
        sep = "&" if "?" in location else "?"
        self._call(
            "PUT",
            f"{location}{sep}digest={blob.digest}",
            content=content,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
            ok=(201,),
        )

    # --- reading

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest ``REPO:TAG`` names, or None when there is no such tag."""
        r = self._call(
            "HEAD",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_V2},
            ok=(200, 404),
        )
        return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None

    def fetch_layer(self, repository: str, digest: str, dest: Path) -> None:
        """Download the one layer of the manifest ``digest`` into ``dest`` (as stored,
        gzipped). After: ``dest`` holds exactly the blob the manifest names (its sha256
        checked), else PermanentError and no ``dest``."""
        r = self._call(
            "GET", f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_V2}
        )
        if sha256_digest(r.content) != digest:
            raise PermanentError(f"registry {self.url}: manifest {digest} does not match itself")
        layers = r.json().get("layers") or []
        if len(layers) != 1:
            raise PermanentError(f"{repository}@{digest} has {len(layers)} layers, not one")
        want = layers[0]["digest"]
        if self._download(f"/v2/{repository}/blobs/{want}", dest) != want:
            dest.unlink(missing_ok=True)
            raise PermanentError(f"registry {self.url}: blob {want} arrived damaged")

    def _download(self, url: str, dest: Path) -> str:
        """GET ``url`` into ``dest``; the sha256 digest of what came."""
        got = hashlib.sha256()
        try:
            with self._http.stream("GET", url) as body:
                if body.status_code != 200:
                    raise PermanentError(f"registry {self.url}: GET {url} -> {body.status_code}")
                with dest.open("wb") as f:
                    for chunk in body.iter_bytes(CHUNK):
                        got.update(chunk)
                        f.write(chunk)
        except httpx.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise TemporaryError(f"registry {self.url} is unreachable: {exc}") from exc
        return "sha256:" + got.hexdigest()

    def repositories(self) -> list[str]:
        """Every repository, following the catalog's pages (Distribution serves 1000 at most)."""
        out: list[str] = []
        url: str | None = "/v2/_catalog?n=1000"
        while url:
            r = self._call("GET", url)
            out += r.json().get("repositories") or []
            url = r.links.get("next", {}).get("url")
        return sorted(out)

    def tags(self, repository: str) -> list[str]:
        r = self._call("GET", f"/v2/{repository}/tags/list", ok=(200, 404))
        return sorted((r.json().get("tags") or []) if r.status_code == 200 else [])

    def describe(self, repository: str, tag: str) -> Tagged | None:
        """Digest, stored size and push time of ``REPO:TAG``; None when it is gone."""
        r = self._call(
            "GET",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_V2},
            ok=(200, 404),
        )
        if r.status_code == 404:
            return None
        body = r.json()
        digest = r.headers.get("Docker-Content-Digest") or sha256_digest(r.content)
        size = int(body["config"]["size"]) + sum(int(x["size"]) for x in body["layers"])
        config = self._call("GET", f"/v2/{repository}/blobs/{body['config']['digest']}").json()
        return Tagged(repository, tag, digest, size, config.get("created"))

    def images(self) -> list[Tagged]:
        """Every repository:tag the registry holds."""
        out = []
        for repository in self.repositories():
            for tag in self.tags(repository):
                found = self.describe(repository, tag)
                if found is not None:
                    out.append(found)
        return out

    # --- deleting

    def delete(self, repository: str, digest: str) -> bool:
        """After: no manifest ``digest`` in ``repository`` (its tags go with it); the
        blobs stay until garbage collection. False when it was already gone."""
        r = self._call("DELETE", f"/v2/{repository}/manifests/{digest}", ok=(202, 404))
        return r.status_code == 202

    # --- the one place that talks HTTP

    def _call(
        self, method: str, url: str, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> httpx.Response:
        try:
            r = self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"registry {self.url} is unreachable: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise PermanentError(f"registry {self.url}: not a usable URL: {exc}") from exc
        if r.status_code in ok:
            return r
        text = "" if method == "HEAD" else r.text[:300]
        message = f"registry {self.url}: {method} {urlsplit(url).path} -> {r.status_code} {text}"
        if r.status_code >= 500:
            raise TemporaryError(message)
        if r.status_code == 405 and method == "DELETE":
            message += " (start the registry with storage.delete.enabled: true)"
        raise PermanentError(message)
