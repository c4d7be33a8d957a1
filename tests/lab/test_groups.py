"""Server groups on real hosts (issue 10 item 5): a lab of 3 hosts, 20 concurrent creates
into one anti-affinity group give exactly 3 ACTIVE instances on 3 distinct hosts, each
reachable on the lab network, and 17 refusals that name the policy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dockyard.lab import lab as labs
from dockyard.lab.procs import run, wait_for
from tests.lab.conftest import LabRun, running_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[LabRun]:
    with running_lab("--hosts", "3") as run:
        yield run


def test_twenty_concurrent_creates_into_an_anti_affinity_group_run_three(
    three_hosts: LabRun,
) -> None:
    lab = labs.Lab.load(three_hosts.state)
    lab.api("POST", "/server-groups", {"name": "web", "policy": "anti-affinity"})

    def create(i: int) -> Any:
        body = {"name": f"web{i}", "image": "demo", "flavor": "small", "network": "lab",
                "group": "web"}  # fmt: skip
        try:
            return lab.api("POST", "/instances", body)
        except labs.LabError as exc:
            return str(exc)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(create, range(20)))
    placed = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, str)]
    assert len(placed) == 3 and len(refused) == 17, answers
    assert all("409" in r and "anti-affinity" in r for r in refused), refused
    assert sorted(a["host"] for a in placed) == ["lab1", "lab2", "lab3"]

    def all_active() -> bool:
        now = {i["name"]: i for i in lab.api("GET", "/instances")}
        return len(now) == 3 and all(i["status"] == "ACTIVE" for i in now.values())

    wait_for(all_active, 120, "the three members to be ACTIVE")
    probe = lab.data["probe_ns"]
    for inst in placed:
        r = three_hosts.cli("server", "show", inst["name"], "-f", "json")
        assert '"ACTIVE"' in r.stdout
        ping = ["nsenter", f"--net=/run/netns/{probe}", "ping", "-c", "2", "-W", "1", inst["ip"]]
        assert run(*ping, check=False).returncode == 0, inst["ip"]


def test_a_soft_anti_affinity_group_with_more_members_than_hosts_spreads_them(
    three_hosts: LabRun,
) -> None:
    """Seven members on three hosts: every one placed and running (a soft policy never
    refuses), spread as far as it goes: 3, 2, 2."""
    three_hosts.cli("server-group", "create", "cache", "--policy", "soft-anti-affinity")
    placed = [
        three_hosts.cli_json(
            "server", "create", f"cache{i}", "--image", "demo", "--flavor", "small",
            "--network", "lab", "--group", "cache", "--wait",
        )  # fmt: skip
        for i in range(7)
    ]
    assert [p["status"] for p in placed] == ["ACTIVE"] * 7
    per_host = Counter(p["host"] for p in placed)
    assert set(per_host) == {"lab1", "lab2", "lab3"} and sorted(per_host.values()) == [2, 2, 3]
    members = three_hosts.cli_json("server-group", "show", "cache")["members"]
    assert len(members) == 7
