"""No harness lives only in tests: bench/ starts Dockyard through dockyard.lab."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_bench_imports_nothing_from_tests() -> None:
    offenders = {
        f"{p.relative_to(REPO)}: {m}"
        for p in sorted((REPO / "bench").glob("*.py"))
        for m in _imports(p)
        if m == "tests" or m.startswith("tests.")
    }
    assert not offenders, f"bench/ must use dockyard.lab, not the test suite: {offenders}"


def test_the_test_harness_is_the_labs() -> None:
    """The integration cluster and the API tests' server are the lab's, adapted."""
    from dockyard.lab.daemons import server
    from dockyard.lab.onehost import OneHost
    from tests.api import server_process
    from tests.integration.cluster import Cluster

    assert issubclass(Cluster, OneHost)
    assert server_process.server is server
