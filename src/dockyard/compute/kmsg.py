"""The agent's one /dev/kmsg reader: kernel-log events counted by class.

Opened once, read from its end (events since the agent started; a counter that
starts at 0 on a restart is what Prometheus's rate() expects), one record per
read(2). Records overwritten before they were read (EPIPE) are skipped. The
classifier is monitor/kmsg.py's pure function.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import Counter

from dockyard.monitor import kmsg

log = logging.getLogger("dockyard.agent")
DEVICE = "/dev/kmsg"


class KernelLog:
    """Counts by class; ``run`` until ``stop`` (a daemon thread of the agent)."""

    def __init__(self, device: str = DEVICE) -> None:
        self.device = device
        self._counts: Counter[str] = Counter({c: 0 for c in kmsg.CLASSES})
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def take(self, record: str) -> None:
        message = kmsg.parse(record)
        found = kmsg.classify(message) if message is not None else None
        if found is not None:
            with self._lock:
                self._counts[found] += 1

    def run(self, stop: threading.Event) -> None:
        try:
            fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("cannot read the kernel log (%s): kernel events are not counted", exc)
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)
            os.set_blocking(fd, True)
            while not stop.is_set():
                self._read_one(fd)
        finally:
            os.close(fd)

    def _read_one(self, fd: int) -> None:
        try:
            data = os.read(fd, 8192)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # overwritten before we read it: go on
                return
            raise
        self.take(data.decode("utf-8", "replace"))
