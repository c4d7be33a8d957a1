"""Ports for the processes the lab and the tests start (lab/procs.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dockyard.lab.procs import free_ports


def test_free_ports_are_consecutive_bindable_and_never_ones_the_kernel_gives_clients() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        base = free_ports(4)
        assert base + 3 < low  # an outgoing connection never takes one of them
        socks = [socket.socket() for _ in range(4)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", base + i))
        finally:
            for s in socks:
                s.close()


def test_a_run_with_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    base = free_ports(8)
    picks = iter([base, base + 4])  # the first candidate run holds the taken port

    class Picks:
        def randrange(self, _start: int, _stop: int) -> int:
            return next(picks)

    monkeypatch.setattr("dockyard.lab.procs.random.Random", Picks)
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 2))
        held.listen()
        assert free_ports(3) == base + 4


def test_a_kernel_whose_every_port_is_ephemeral_still_gives_ports(monkeypatch):
    monkeypatch.setattr("dockyard.lab.procs._ephemeral_low", lambda: 1024)
    base = free_ports(3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 2))
