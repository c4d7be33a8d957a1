"""Which host's port a lab address speaks from: frames sniffed on the switch ports.

An instance keeps its MAC when it moves (the MAC derives from the IP), so only the
switch port a frame arrives on tells the hosts apart. One AF_PACKET socket per
host's uplink port (root namespace) notes when a frame *from* the address (ARP
sender or IPv4 source) comes in from that host.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

ETH_P_ALL, ETH_P_IP, ETH_P_ARP = 0x0003, 0x0800, 0x0806


def _sender(frame: bytes) -> bytes | None:
    if len(frame) < 34:
        return None
    (kind,) = struct.unpack("!H", frame[12:14])
    if kind == ETH_P_ARP:
        return frame[28:32]
    if kind == ETH_P_IP:
        return frame[26:30]
    return None


@contextmanager
def heard_from(ip: str, ports: list[str]) -> Iterator[dict[str, list[float]]]:
    """Yields {port: [monotonic times a frame from ``ip`` passed it]}, filled until exit."""
    want, heard = socket.inet_aton(ip), {p: [] for p in ports}
    stop = threading.Event()

    def listen(port: str) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
            s.bind((port, 0))
            s.settimeout(0.2)
            while not stop.is_set():
                try:
                    frame, (_, _, kind, *_) = s.recvfrom(2048)
                except TimeoutError:
                    continue
                # only what the host sent into the switch: the switch also floods the
                # other host's broadcasts (its gratuitous ARP) out through this port
                if kind != socket.PACKET_OUTGOING and _sender(frame) == want:
                    heard[port].append(time.monotonic())

    threads = [threading.Thread(target=listen, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    try:
        yield heard
    finally:
        stop.set()
        for t in threads:
            t.join(5)
