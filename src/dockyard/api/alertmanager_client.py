"""A client of Alertmanager's API v2: firing alerts and silences.

The server proxies these (api/alertmanager.py), so the CLI needs only Dockyard's
endpoint and its token; Alertmanager itself listens on the server's side.

    AlertmanagerUnavailable (503)   not configured, unreachable, or answered 5xx
    Unprocessable (422)             Alertmanager refused the silence; says why
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from dockyard.errors import DockyardError, NotFound, Unprocessable
from dockyard.model.alerts import Matcher

TIMEOUT = 10.0


class AlertmanagerUnavailable(DockyardError):
    status = 503
    title = "Alertmanager unavailable"


class Alertmanager:
    def __init__(self, url: str | None, timeout: float = TIMEOUT) -> None:
        if not url:
            raise AlertmanagerUnavailable(
                "this server knows no Alertmanager; start it with ALERTMANAGER_URL set "
                "(`dockyard up --monitoring` does)"
            )
        self.url, self.timeout = url.rstrip("/"), timeout

    async def alerts(self) -> list[dict[str, Any]]:
        """Active alerts, silenced and inhibited ones too (their ``status`` says so)."""
        out: list[dict[str, Any]] = await self._call("GET", "/api/v2/alerts")
        return out

    async def silences(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await self._call("GET", "/api/v2/silences")
        return out

    async def silence(
        self, matchers: list[Matcher], seconds: int, author: str, comment: str
    ) -> str:
        """A new silence from now for ``seconds``; its id."""
        start = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
                for m in matchers
            ],
            "startsAt": start.isoformat(),
            "endsAt": (start + timedelta(seconds=seconds)).isoformat(),
            "createdBy": author,
            "comment": comment,
        }
        answer = await self._call("POST", "/api/v2/silences", body)
        return str(answer["silenceID"])

    async def expire(self, silence_id: str) -> None:
        await self._call("DELETE", f"/api/v2/silence/{silence_id}")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
                r = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AlertmanagerUnavailable(
                f"cannot reach Alertmanager at {self.url}: {type(exc).__name__} {exc}; "
                "check that it runs"
            ) from exc
        if r.status_code == 404:
            raise NotFound(f"Alertmanager has no {path.rsplit('/', 1)[-1]!r}: {r.text[:200]}")
        if 400 <= r.status_code < 500:
            raise Unprocessable(f"Alertmanager refused it: {r.text[:500]}")
        if r.status_code >= 500:
            raise AlertmanagerUnavailable(
                f"Alertmanager answered HTTP {r.status_code}: {r.text[:200]}"
            )
        return r.json() if r.content else None
