"""YAML text for the configuration Dockyard renders (Prometheus, its rules, Alertmanager).

Block style for mappings and lists of mappings, flow style for lists of scalars,
and strings plain where YAML reads them back as the same string, else in double
quotes with JSON's escapes (a subset of YAML's). Enough for what monitor/ writes,
without a YAML library as a dependency of the server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def dump(value: Mapping[str, Any]) -> str:
    """``value`` (mappings, sequences, str, int, float, bool, None) as a YAML document."""
    return "\n".join(_mapping(value, 0)) + "\n"


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return "".join(_escaped(c) for c in json.dumps(text, ensure_ascii=False))


def _escaped(c: str) -> str:
    """YAML allows no control character in a document, even quoted: escape those
    JSON leaves as they are (C1 controls, separators), as YAML's \\x, \\u, \\U."""
    if c.isprintable() or c == " ":
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _mapping(value: Mapping[str, Any], indent: int) -> list[str]:
    pad, out = " " * indent, []
    for key, item in value.items():
        head = f"{pad}{scalar(key)}:"
        if _block(item):
            out.append(head)
            out += _nested(item, indent + 2)
        else:
            out.append(f"{head} {_inline(item)}")
    return out


def _sequence(value: Sequence[Any], indent: int) -> list[str]:
    pad, out = " " * indent, []
    for item in value:
        if isinstance(item, Mapping) and item:
            lines = _mapping(item, indent + 2)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out += lines[1:]
        elif _block(item):
            out.append(f"{pad}-")
            out += _nested(item, indent + 2)
        else:
            out.append(f"{pad}- {_inline(item)}")
    return out


def _nested(value: Any, indent: int) -> list[str]:
    return _mapping(value, indent) if isinstance(value, Mapping) else _sequence(value, indent)


def _block(value: Any) -> bool:
    if isinstance(value, Mapping):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, (Mapping, list, tuple)) for v in value)
    return False


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    return scalar(value)
