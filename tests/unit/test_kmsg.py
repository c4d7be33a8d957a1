"""The kernel-log classifier on recorded /dev/kmsg records."""

from __future__ import annotations

import pytest

from dockyard.monitor import kmsg

RECORDED = [
    (
        "3,5921,81234567890,-;Memory cgroup out of memory: Killed process 48213 (python3) "
        "total-vm:1093948kB, anon-rss:127012kB, file-rss:2048kB, shmem-rss:0kB, UID:0 "
        "pgtables:372kB oom_score_adj:0",
        "oom_kill",
    ),
    (
        "3,6001,91234567890,-;Out of memory: Killed process 901 (java) total-vm:8123456kB",
        "oom_kill",
    ),
    ("3,12,1234,-;Out of memory: Kill process 901 (java) score 987 or sacrifice child", "oom_kill"),
    (
        "3,7100,120000000,-;INFO: task jbd2/sda1-8:301 blocked for more than 120 seconds.",
        "hung_task",
    ),
    (
        "4,7200,130000000,-;kworker/u4:2: page allocation failure: order:4, "
        "mode:0x40cc0(GFP_KERNEL|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0",
        "page_allocation_failure",
    ),
    (
        "3,7300,140000000,-;blk_update_request: I/O error, dev sdb, sector 2048 op "
        "0x0:(READ) flags 0x0 phys_seg 1 prio class 0",
        "io_error",
    ),
    (
        "3,7301,140000100,-;Buffer I/O error on dev sdb1, logical block 0, async page read",
        "io_error",
    ),
    (
        "6,7400,150000000,-;python3[4242]: segfault at 0 ip 00007f0a1b2c3d4e sp "
        "00007ffd5e6f7a80 error 4 in libc.so.6[7f0a1b200000+155000]",
        "segfault",
    ),
    (
        "0,7500,160000000,-;watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [stress:5150]",
        "soft_lockup",
    ),
]

NOT_EVENTS = [
    # the other lines of an OOM kill: one kill counts once
    "4,5919,81234567000,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
    "6,5920,81234567800,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    "mems_allowed=0,oom_memcg=/docker/abc,task_memcg=/docker/abc,task=python3,pid=48213,uid=0",
    "6,5922,81234567990,-;oom_reaper: reaped process 48213 (python3), now anon-rss:0kB",
    "6,100,2000,-;docker0: port 1(veth1234) entered forwarding state",
    "6,101,2001,-;EXT4-fs (sda1): mounted filesystem with ordered data mode",
    "4,102,2002,-;hung_task_timeout_secs is 120",
]


@pytest.mark.parametrize(("record", "expected"), RECORDED)
def test_recorded_kernel_events_fall_in_their_class(record: str, expected: str) -> None:
    message = kmsg.parse(record)
    assert message is not None
    assert kmsg.classify(message) == expected
    assert expected in kmsg.CLASSES


@pytest.mark.parametrize("record", NOT_EVENTS)
def test_ordinary_lines_and_the_other_lines_of_an_oom_kill_are_no_event(record: str) -> None:
    message = kmsg.parse(record)
    assert message is not None
    assert kmsg.classify(message) is None


def test_continuation_lines_and_garbage_are_not_records() -> None:
    assert kmsg.parse(" SUBSYSTEM=block") is None
    assert kmsg.parse(" DEVICE=b8:16") is None
    assert kmsg.parse("") is None
    assert kmsg.parse("no header here") is None
    assert kmsg.parse("6,1,2,-;hello\n") == "hello"
