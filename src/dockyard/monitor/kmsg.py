"""Kernel-log events by class: the pure classifier of /dev/kmsg records.

    /dev/kmsg record  "6,1234,5678901,-;Out of memory: Killed process 42 (python3) ..."
        parse()     ──► (priority, message)        continuation lines (" KEY=value") ──► None
        classify()  ──► "oom_kill" | "hung_task" | ... | None

The agent's reader thread (compute/kmsg.py) counts the classes; the counters are
``dockyard_host_kernel_events_total{class}`` (monitor/README.md). One kernel event
is one class and counts once: an OOM kill logs several lines, of which only the
"Killed process" line is counted.
"""

from __future__ import annotations

import re

CLASSES = (
    "oom_kill",
    "hung_task",
    "page_allocation_failure",
    "io_error",
    "segfault",
    "soft_lockup",
)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "Out of memory: Killed process 42 (x)" and "Memory cgroup out of memory: Killed ..."
    ("oom_kill", re.compile(r"out of memory: kill(?:ed)? process \d+", re.I)),
    ("hung_task", re.compile(r"\btask \S+:\d+ blocked for more than \d+ seconds")),
    ("page_allocation_failure", re.compile(r"page allocation failure: ")),
    ("soft_lockup", re.compile(r"BUG: soft lockup - CPU#\d+ stuck")),
    ("segfault", re.compile(r"\bsegfault at [0-9a-f]+ ")),
    # "blk_update_request: I/O error, dev sda", "Buffer I/O error on dev", "I/O error, dev"
    ("io_error", re.compile(r"\bI/O error\b")),
)


def parse(record: str) -> str | None:
    """The message of one /dev/kmsg record ("PRI,SEQ,USEC,FLAGS;message"), or None for
    a continuation line (" SUBSYSTEM=...") or a line that is not a record."""
    if not record or record[0] == " ":
        return None
    head, sep, message = record.partition(";")
    if not sep or head.count(",") < 2:
        return None
    return message.rstrip("\n")


def classify(message: str) -> str | None:
    """The class of a kernel message, or None when it is none of CLASSES."""
    for name, pattern in _RULES:
        if pattern.search(message):
            return name
    return None
