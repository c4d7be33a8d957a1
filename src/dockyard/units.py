"""Human units: sizes like 10MB, rates like 50mbit, durations like 6h.

Sizes follow docker's reading (``10MB`` = 10 MiB = 10 * 1024 * 1024 bytes);
network rates follow tc's (``50mbit`` = 50,000,000 bit/s). A bare number is
bytes (sizes), kbit/s (rates) or seconds (durations).
"""

from __future__ import annotations

import re

_SIZE = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
}
_RATE = {"": 1, "kbit": 1, "mbit": 1000, "gbit": 1000 * 1000}
_DURATION = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in ``text`` (``10MB``, ``512k``, ``1048576``); ValueError says what is accepted."""
    value, unit = _split(text, "size", "10MB, 512KB or 1GB")
    factor = _SIZE.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}; use B, KB, MB or GB")
    return int(value * factor)


def parse_rate_kbit(text: str) -> int:
    """kbit/s in ``text`` (``50mbit``, ``800kbit``, ``1gbit``)."""
    value, unit = _split(text, "rate", "50mbit, 800kbit or 1gbit")
    factor = _RATE.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown rate unit {unit!r} in {text!r}; use kbit, mbit or gbit")
    return int(value * factor)


def parse_duration(text: str) -> int:
    """Whole seconds in ``text`` (``6h``, ``90m``, ``1d``, ``30s``, ``3600``)."""
    value, unit = _split(text, "duration", "6h, 90m, 1d or 3600 (seconds)")
    factor = _DURATION.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"unknown duration unit {unit!r} in {text!r}; use s, m, h, d or w, like 6h"
        )
    return round(value * factor)


def format_duration(seconds: int) -> str:
    """The largest unit that divides ``seconds`` exactly: 21600 -> 6h, 5400 -> 90m."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a {what}; write it like {examples}")
    return float(m.group(1)), m.group(2)
