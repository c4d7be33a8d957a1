"""A thin HTTP client for the CLI; problem+json errors become CliError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx


class CliError(Exception):
    """Printed as ``error: <message>`` and exit status 1; never a traceback."""


class Api:
    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get("DOCKYARD_URL")
        token = token or os.environ.get("DOCKYARD_TOKEN")
        if not url or not token:
            raise CliError(
                "set DOCKYARD_URL and DOCKYARD_TOKEN (`source STATE_DIR/admin.env` after "
                "`dockyard up`)"
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + "/v1", headers={"authorization": f"Bearer {token}"}, timeout=60
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the server at {self.url}: {exc}") from exc
        if r.status_code >= 400:
            raise CliError(_problem(r))
        return r.json() if r.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def upload(self, path: str, file: Path) -> Any:
        with file.open("rb") as f:
            return self.call(
                "PUT", path, content=f, headers={"content-type": "application/octet-stream"}
            )

    def find(self, path: str) -> Any:
        """GET, or None when the resource does not exist (404)."""
        try:
            r = self._http.get(path)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the server at {self.url}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise CliError(_problem(r))
        return r.json()

    def long_poll(self, path: str, params: dict[str, Any], hold: float) -> tuple[int, Any]:
        """GET that the server may hold ``hold`` seconds: (status, body); 404 and 410
        come back as statuses (the caller decides what a missing route or a deleted
        resource means), other errors raise CliError."""
        try:
            r = self._http.get(path, params=params, timeout=hold + 30)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the server at {self.url}: {exc}") from exc
        if r.status_code >= 400 and r.status_code not in (404, 410):
            raise CliError(_problem(r))
        return r.status_code, (r.json() if r.content else None)

    def exists(self, path: str) -> bool:
        return self.find(path) is not None


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{detail or body} (HTTP {r.status_code})"
