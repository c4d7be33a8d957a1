"""The agent's client for the server's /v1/agent endpoints."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from dockyard import model
from dockyard.errors import PermanentError, TemporaryError


class ServerClient:
    def __init__(self, url: str, token: str, host: str) -> None:
        self.host = host
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=70.0),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TemporaryError(f"server unreachable: {exc}") from exc
        if r.status_code >= 500:
            raise TemporaryError(f"server error {r.status_code} on {path}: {r.text[:200]}")
        if r.status_code >= 400:
            detail = r.json().get("detail", r.text) if r.content else r.reason_phrase
            raise PermanentError(f"server refused {method} {path}: {detail}", status=r.status_code)
        return r

    def register(self, req: model.HostRegister) -> model.Host:
        return model.Host.model_validate(
            self._call("POST", "/agent/hosts", json=req.model_dump()).json()
        )

    def heartbeat(self) -> int:
        return int(self._call("POST", f"/agent/hosts/{self.host}/heartbeat").json()["generation"])

    def desired(self, since: int, wait: float) -> model.DesiredState:
        r = self._call(
            "GET", f"/agent/hosts/{self.host}/desired", params={"since": since, "wait": wait}
        )
        return model.DesiredState.model_validate(r.json())

    def report(self, instance_id: str, rep: model.InstanceReport) -> None:
        """Tell the server; an instance it no longer places here is not an error."""
        try:
            self._call(
                "PUT", f"/agent/instances/{instance_id}/state", json=rep.model_dump(mode="json")
            )
        except PermanentError as exc:
            if exc.extra.get("status") != 404:
                raise

    def events(self, instance_id: str, events: list[model.InstanceEvent]) -> None:
        try:
            self._call(
                "POST",
                f"/agent/instances/{instance_id}/events",
                json=[e.model_dump(mode="json") for e in events],
            )
        except PermanentError as exc:
            if exc.extra.get("status") != 404:
                raise

    def download_image(self, image_id: str, dest: Path, sha256: str | None = None) -> None:
        """Fetch the image's rootfs tarball to ``dest``, hashed on the way.

        A tarball whose SHA-256 is not ``sha256`` (what the server recorded at
        upload) is removed and raises PermanentError: it must not be imported.
        """
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/images/{image_id}/file") as r:
                if r.status_code != 200:
                    r.read()
                    raise PermanentError(
                        f"server has no rootfs for image {image_id}: {r.text[:200]}"
                    )
                with dest.open("wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
        except httpx.TransportError as exc:
            dest.unlink(missing_ok=True)
            raise TemporaryError(f"image download failed: {exc}") from exc
        if sha256 is not None and digest.hexdigest() != sha256:
            dest.unlink(missing_ok=True)
            raise PermanentError(
                f"the rootfs of image {image_id} is damaged (sha256 {digest.hexdigest()[:16]}..., "
                f"expected {sha256[:16]}... as uploaded); nothing was imported. An admin must "
                "upload the image again (`dockyard image import NAME --rootfs FILE`), then "
                "create the instance again"
            )

    def close(self) -> None:
        self._http.close()
