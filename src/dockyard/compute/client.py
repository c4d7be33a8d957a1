"""The agent's side of the server: the ``Server`` protocol, the HTTP client of the
server's /v1/agent endpoints (``ServerClient``) and an in-memory ``FakeServer``."""

from __future__ import annotations

import hashlib
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from dockyard import model
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model.builds import BuildDone, BuildFailure, BuildOrders


class Server(Protocol):
    """What the agent asks of the server. Unreachable or 5xx: TemporaryError; refused
    (4xx): PermanentError with the status in ``extra``."""

    def register(self, req: model.HostRegister) -> model.Host:
        """After: the server knows this host with these figures. Already known: updated."""
        ...

    def heartbeat(self, status: model.HostStatus | None = None) -> model.Beat:
        """The host is alive; returns its generation and when to beat next. Unknown
        host: PermanentError 404. ``status``: its baseline and its instances' drift
        (consistency checks)."""
        ...

    def desired(self, since: int, wait: float) -> model.DesiredState:
        """This host's desired state, once its generation differs from ``since`` or
        ``wait`` seconds passed."""
        ...

    def report(self, instance_id: str, rep: model.InstanceReport) -> None:
        """Tell the server what is; an instance no longer placed here is not an error."""
        ...

    def events(self, instance_id: str, events: list[model.InstanceEvent]) -> None:
        """Add to the instance's event log; an instance no longer placed here: no-op."""
        ...

    def monitoring(self) -> list[str]:
        """The SHA-256 (hex) of every monitoring token a scrape of /metrics may carry."""
        ...

    def download_image(self, image_id: str, dest: Path, sha256: str | None = None) -> None:
        """After: ``dest`` holds the image's rootfs tarball, whose SHA-256 is ``sha256``.
        Damaged or missing: PermanentError and no ``dest``."""
        ...


class ServerClient:
    """``ca_file``: verify an https server against this CA (default: the system's)."""

    def __init__(self, url: str, token: str, host: str, ca_file: Path | None = None) -> None:
        self.host = host
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=70.0),
            verify=verify,
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
        return model.from_newer(
            model.Host, self._call("POST", "/agent/hosts", json=req.model_dump()).json()
        )

    def heartbeat(self, status: model.HostStatus | None = None) -> model.Beat:
        body = status.model_dump(mode="json") if status is not None else None
        r = self._call("POST", f"/agent/hosts/{self.host}/heartbeat", json=body)
        return model.from_newer(model.Beat, r.json())  # an older server: no beat_every

    def desired(self, since: int, wait: float) -> model.DesiredState:
        r = self._call(
            "GET", f"/agent/hosts/{self.host}/desired", params={"since": since, "wait": wait}
        )
        return model.from_newer(model.DesiredState, r.json())  # the server may be newer

    def monitoring(self) -> list[str]:
        body = self._call("GET", "/agent/monitoring").json()
        return [str(h) for h in body.get("scrape_token_sha256", [])]

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

    # --- recovery (compute/recovery.py's RecoveryServer)

    def recoveries(self, since: int, wait: float) -> model.RecoveryOrders:
        r = self._call(
            "GET", f"/agent/hosts/{self.host}/recoveries", params={"since": since, "wait": wait}
        )
        return model.from_newer(model.RecoveryOrders, r.json())

    def upload_recovery(self, order_id: str, tar: Path, sha256: str) -> None:
        with tar.open("rb") as f:
            self._call(
                "PUT",
                f"/agent/recoveries/{order_id}/data",
                content=f,
                headers={"x-dockyard-sha256": sha256, "content-type": "application/x-tar"},
                timeout=httpx.Timeout(10.0, read=300.0, write=300.0),
            )

    def fail_recovery(self, order_id: str, error: str) -> None:
        self._call("POST", f"/agent/recoveries/{order_id}/failure", json={"error": error})

    def recovered_data(self, order_id: str) -> bytes:
        """The tar of a delivery (its sha256 is in the order; the caller checks it)."""
        r = self._call(
            "GET",
            f"/agent/recoveries/{order_id}/data",
            timeout=httpx.Timeout(10.0, read=300.0),
        )
        return r.content

    def delivered(self, order_id: str) -> None:
        self._call("POST", f"/agent/recoveries/{order_id}/delivered")

    # --- builds (compute/builds.py's BuildServer)

    def builds(self, since: int, wait: float) -> BuildOrders:
        r = self._call(
            "GET", f"/agent/hosts/{self.host}/builds", params={"since": since, "wait": wait}
        )
        return model.from_newer(BuildOrders, r.json())

    def start_build(self, build_id: str) -> None:
        self._call("POST", f"/agent/builds/{build_id}/start")

    def build_log(self, build_id: str, offset: int, text: bytes) -> None:
        self._call(
            "POST",
            f"/agent/builds/{build_id}/log",
            params={"offset": offset},
            content=text,
            headers={"content-type": "text/plain; charset=utf-8"},
        )

    def build_done(self, build_id: str, done: BuildDone) -> None:
        self._call("POST", f"/agent/builds/{build_id}/done", json=done.model_dump(mode="json"))

    def build_failed(self, build_id: str, failure: BuildFailure) -> None:
        self._call(
            "POST", f"/agent/builds/{build_id}/failure", json=failure.model_dump(mode="json")
        )

    def close(self) -> None:
        self._http.close()


class FakeServer:
    """In memory: the desired state a test publishes, and what the agent told it."""

    def __init__(self, host: str = "fake") -> None:
        self.host = host
        self.state = model.DesiredState(generation=0, instances=[], volumes=[])
        self.registered: list[model.HostRegister] = []
        self.reports: list[tuple[str, model.InstanceReport]] = []
        self.events_of: dict[str, list[model.InstanceEvent]] = {}
        self.rootfs: dict[str, bytes] = {}  # image id -> tarball
        self.statuses: list[model.HostStatus] = []  # heartbeats' bodies
        self.beat_every = 10.0  # what its heartbeats answer
        self.scrape_hashes: list[str] = []

    def publish(self, *instances: model.DesiredInstance) -> model.DesiredState:
        """A new generation with exactly these instances; the volume list is kept."""
        volumes = self.state.volumes
        self.state = model.DesiredState(
            generation=self.state.generation + 1, instances=list(instances), volumes=volumes
        )
        return self.state

    def reports_of(self, instance_id: str) -> list[model.InstanceReport]:
        return [rep for iid, rep in self.reports if iid == instance_id]

    def register(self, req: model.HostRegister) -> model.Host:
        self.registered.append(req)
        return model.Host(
            id=req.name,
            name=req.name,
            availability_zone=req.availability_zone,
            state="up",
            enabled=True,
            cores=req.cores,
            memory_mb=req.memory_mb,
            disk_gb=req.disk_gb,
            labels=req.labels,
            docker_version=req.docker_version,
            networks=req.networks,
            last_heartbeat=datetime.now(UTC),
        )

    def heartbeat(self, status: model.HostStatus | None = None) -> model.Beat:
        if status is not None:
            self.statuses.append(status)
        return model.Beat(generation=self.state.generation, beat_every=self.beat_every)

    def monitoring(self) -> list[str]:
        return list(self.scrape_hashes)

    def desired(self, since: int, wait: float) -> model.DesiredState:
        return self.state

    def report(self, instance_id: str, rep: model.InstanceReport) -> None:
        self.reports.append((instance_id, rep))

    def events(self, instance_id: str, events: list[model.InstanceEvent]) -> None:
        self.events_of.setdefault(instance_id, []).extend(events)

    def download_image(self, image_id: str, dest: Path, sha256: str | None = None) -> None:
        data = self.rootfs.get(image_id)
        if data is None:
            raise PermanentError(f"server has no rootfs for image {image_id}")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise PermanentError(f"the rootfs of image {image_id} is damaged")
        dest.write_bytes(data)
