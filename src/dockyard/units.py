"""Human units for limits: sizes like 10MB and rates like 50mbit.

Sizes follow docker's reading (``10MB`` = 10 MiB = 10 * 1024 * 1024 bytes);
network rates follow tc's (``50mbit`` = 50,000,000 bit/s). A bare number is
bytes (sizes) or kbit/s (rates).
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


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a {what}; write it like {examples}")
    return float(m.group(1)), m.group(2)
