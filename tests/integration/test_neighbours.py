"""Two clouds on one machine: each agent and each teardown touches only its own.

Both agents live in the host's network namespace (as a test run beside a demo
cloud does): the second one sees the first one's veths, IFBs and port rules,
which have the same shape as its own, and must leave them alone while it
reconciles and when it is torn down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dockyard.network import firewall
from tests.integration.conftest import running_cluster

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_second_cloud_on_the_machine_leaves_the_first_ones_instances_alone(cluster):
    shaped = ("--net-egress", "50mbit")
    cluster.cli("flavor", "create", "shaped", "--vcpus", "1", "--memory", "128", *shaped)
    mine = cluster.create("mine", flavor="shaped")
    links = sorted(cluster.links())
    assert len(links) == 2  # the host end and the IFB (the peer is eth0 inside)
    port = "dy" + mine["id"].replace("-", "")[:11]

    with running_cluster() as other:
        theirs = other.create("theirs")
        time.sleep(12)  # more than one of the other agent's 10 s reconcile passes
        assert sorted(cluster.links()) == links
        assert cluster.probe.ping(mine["ip"], count=2)
        assert other.probe.ping(theirs["ip"], count=2)
    # the other cloud is gone, with everything it made (its dockerd's cgroups too), and only that
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{other.dockerd.cgroup_parent}"))
    assert sorted(cluster.links()) == links and port in firewall.ports()
    assert cluster.probe.ping(mine["ip"], count=2)
    cluster.cli("server", "delete", "mine", "--wait")
    assert cluster.links() == []
