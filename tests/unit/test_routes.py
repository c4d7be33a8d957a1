"""The order of the API's routers (api/app.py ROUTERS) decides which route answers a
path two of them could match: FastAPI takes the first. Hot routers go first for speed,
so no router may hold a route that would take a later router's path."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute

from dockyard.api.app import ROUTERS


def _sample(path: str) -> str:
    """A concrete path the route template matches (every parameter ``x``)."""
    return re.sub(r"\{[^}:]+(:path)?\}", lambda m: "x/y" if m.group(1) else "x", path)


def _routes(module: object) -> list[APIRoute]:
    return [r for r in module.router.routes if isinstance(r, APIRoute)]  # type: ignore[attr-defined]


def test_no_router_takes_a_path_meant_for_a_later_one():
    taken = []
    for i, first in enumerate(ROUTERS):
        for later in ROUTERS[i + 1 :]:
            for a in _routes(first):
                for b in _routes(later):
                    if a.methods & b.methods and a.path_regex.match(_sample(b.path)):
                        taken.append(f"{first.__name__} {a.path} takes {later.__name__} {b.path}")
    assert taken == []


def test_the_check_sees_a_shadowed_route():
    """hosts before drift: GET /hosts/{name} would answer GET /hosts/check."""
    from dockyard.api import drift, hosts

    shadowed = [
        (a.path, b.path)
        for a in _routes(hosts)
        for b in _routes(drift)
        if a.methods & b.methods and a.path_regex.match(_sample(b.path))
    ]
    assert ("/hosts/{name}", "/hosts/check") in shadowed
