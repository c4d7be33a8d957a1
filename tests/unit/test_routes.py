"""The order of the API's routers (api/app.py ROUTERS) decides which route answers a
path two of them could match: FastAPI takes the first. Hot routers go first for speed,
so no router may hold a route that takes a later router's path, but where meant."""

from __future__ import annotations

from fastapi.routing import APIRoute

from dockyard.api.app import ROUTERS

# (earlier router, its route, later router, the route it takes paths from): meant
MEANT = {
    # /hosts/check and /hosts/baseline are not hosts called check and baseline
    ("drift", "/hosts/check", "hosts", "/hosts/{name}"),
    ("drift", "/hosts/baseline", "hosts", "/hosts/{name}"),
    # /alerts/adapter/ack is the adapter's, not an ack of an alert called "adapter"
    ("alerts", "/alerts/adapter/{key}", "alertmanager", "/alerts/{fingerprint}/ack"),
}


def _overlap(a: str, b: str) -> bool:
    """Some path matches both templates: segment by segment, equal or a parameter
    (one ``{...:path}`` parameter takes the rest)."""
    xs, ys = a.strip("/").split("/"), b.strip("/").split("/")
    for x, y in zip(xs, ys, strict=False):
        if x.endswith(":path}") or y.endswith(":path}"):
            return True
        if x != y and not x.startswith("{") and not y.startswith("{"):
            return False
    return len(xs) == len(ys)


def _routes(module: object) -> list[APIRoute]:
    return [r for r in module.router.routes if isinstance(r, APIRoute)]  # type: ignore[attr-defined]


def _taken(order: tuple[object, ...]) -> set[tuple[str, str, str, str]]:
    out = set()
    for i, first in enumerate(order):
        for later in order[i + 1 :]:
            for a in _routes(first):
                for b in _routes(later):
                    if a.methods & b.methods and _overlap(a.path, b.path):
                        name = first.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
                        other = later.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
                        out.add((name, a.path, other, b.path))
    return out


def test_no_router_takes_a_path_meant_for_a_later_one():
    assert _taken(ROUTERS) == MEANT


def test_the_check_sees_routers_out_of_order():
    """hosts before drift: GET /hosts/{name} would answer GET /hosts/check; alertmanager
    before alerts: an ack would answer the adapter's /alerts/adapter/ack."""
    from dockyard.api import alertmanager, alerts, drift, hosts

    assert ("hosts", "/hosts/{name}", "drift", "/hosts/check") in _taken((hosts, drift))
    swapped = _taken((alertmanager, alerts))
    assert any(a == "alertmanager" and b == "alerts" for a, _, b, _ in swapped)
