"""Files into an instance's container through dockerd's archive endpoint (what
`docker cp` uses), for recovered files delivered into an instance.

Why this way: the archive endpoint works on running and stopped containers alike,
sees the instance's volumes where it sees them, and resolves every path inside the
container's root (a symbolic link the instance made cannot lead the write onto the
host). Writing into an overlay upper directory behind a running container's back is
undefined; entering its mount namespace needs a tar binary inside it.

Only compute/drivers/docker.py imports the docker SDK: this module drives the
driver's low-level client and catches the HTTP errors it raises (its APIError is a
requests HTTPError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests.exceptions

from dockyard.compute.driver import container_name
from dockyard.compute.recovery import Refused
from dockyard.errors import TemporaryError

if TYPE_CHECKING:
    from dockyard.compute.drivers.docker import DockerDriver


class DockerFiles:
    """compute/recovery.py's FilesInto on a Docker host."""

    def __init__(self, driver: DockerDriver) -> None:
        self.api = driver.api

    def put(self, instance_id: str, tar: bytes, top: str) -> None:
        name = container_name(instance_id)
        try:
            self.api.inspect_container(name)
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        except requests.exceptions.HTTPError as exc:
            raise Refused(f"the instance has no container on this host: {_why(exc)}") from exc
        if self._exists(name, top):
            raise Refused(
                f"{top} already exists in the instance: recover into a directory where "
                "it is not (nothing was overwritten)"
            )
        try:
            self.api.put_archive(name, "/", tar)
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        except requests.exceptions.HTTPError as exc:
            raise Refused(f"dockerd refused to write the files: {_why(exc)}") from exc

    def _exists(self, name: str, path: str) -> bool:
        """HEAD of the archive endpoint (the container is there): 200 the path is, 404
        it is not."""
        url = f"{self.api.base_url}/v{self.api.api_version}/containers/{name}/archive"
        try:
            r = self.api.head(url, params={"path": path})
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        if r.status_code not in (200, 404):
            raise Refused(f"dockerd could not look at {path}: HTTP {r.status_code}")
        return r.status_code == 200


def _why(exc: requests.exceptions.HTTPError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)[:500]
