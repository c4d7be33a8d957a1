"""Consistency checks: what a host's environment is, what it should be, and the drift.

An agent reports its host's *baseline* (kernel, cgroups, dockerd and its flags, the
sysctls Dockyard relies on, its networks' bridges) and each of its instances' drift
(a container's real limits, mounts and port against the desired spec) with its
heartbeat. The server compares baselines against the cluster's declared values or the
value most up hosts report (monitor/drift.py), and lists the drift (``host check``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from dockyard.model.base import Schema

MAX_ITEMS = 256  # baseline items per host
MAX_INSTANCES = 4096  # instances with drift in one heartbeat

BaselineKey = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:/@-]{0,127}$"),
    Field(description="an item's name, e.g. sysctl.kernel.pid_max"),
]
BaselineValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
Baseline = Annotated[dict[BaselineKey, BaselineValue], Field(max_length=MAX_ITEMS)]


class Drift(Schema):
    """One item where what is differs from what should be."""

    item: str = Field(max_length=128)
    value: str = Field(max_length=512, description="what the host or container has")
    expected: str = Field(max_length=512)
    source: str = Field(
        max_length=128,
        description="where expected came from: declared, required, majority of N hosts, "
        "or the desired spec",
    )


class InstanceDrift(Schema):
    """An instance whose container differs from its desired spec."""

    instance_id: str = Field(max_length=64)
    name: str = Field(max_length=128)
    items: list[Drift] = Field(max_length=64)


class HostStatus(Schema):
    """The body of an agent's heartbeat (none from older agents: nothing changes)."""

    baseline: Baseline | None = Field(
        default=None, description="the host's baseline; None: unknown now (keep the last)"
    )
    instance_drift: list[InstanceDrift] | None = Field(
        default=None, max_length=MAX_INSTANCES, description="None: not checked yet"
    )


class HostCheck(Schema):
    """One host's consistency check."""

    host: str
    availability_zone: str
    state: str
    drift: list[Drift] = Field(description="baseline items that differ")
    undecided: list[str] = Field(
        default=[],
        description="items where up hosts disagree with no majority and nothing is "
        "declared: `dockyard host baseline set ITEM=VALUE` decides",
    )
    instances: list[InstanceDrift] = []
    reported_at: datetime | None = Field(default=None, description="the last baseline")


class BaselineItem(Schema):
    item: str
    value: str | None = Field(description="expected value; None: undecided (a tie)")
    source: str = Field(description="declared, required, or majority of N hosts")
    hosts: int = Field(description="up hosts reporting the item")


class BaselineDeclare(Schema):
    """Set (and with ``remove``, forget) the cluster's declared values."""

    values: Baseline = {}
    remove: list[BaselineKey] = Field(default=[], max_length=MAX_ITEMS)
