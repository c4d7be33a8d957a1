"""Per-subnet hostname rules: a template over the IP's octets.

``web{o3}{o4:03d}`` gives ``web3053`` for 10.15.3.53, the seed's naming.
Fields: o1..o4 (octets, ints), ip (dotted string with '-' for '.'), name
(instance name). A rule is parsed and checked before it is ever rendered:
literal text of hostname characters, fields from the list above, no
conversions (``!r``), and format specs from a small whitelist with a small
width, so no rule can ask for a gigabyte of padding or nest another field.
"""

from __future__ import annotations

import ipaddress
import re
import string

from dockyard.errors import Unprocessable

_OCTETS = {"o1", "o2", "o3", "o4"}
_TEXTS = {"ip", "name"}
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LITERAL = re.compile(r"^[a-zA-Z0-9-]*$")
# octets: optional zero padding, a width of 1-8, decimal or hex ("03d", "x", "02X")
_OCTET_SPEC = re.compile(r"^0?[1-8]?[dxX]?$")
# texts: at most a truncation (".8")
_TEXT_SPEC = re.compile(r"^(\.[1-9][0-9]?)?$")
MAX_RULE = 64
_EXAMPLE = "e.g. 'web{o3}{o4:03d}'"


def validate_rule(rule: str) -> None:
    """Raise Unprocessable unless ``rule`` is a safe template that renders a valid hostname."""
    _check_template(rule)
    render(rule, "198.18.3.53", "example")


def _check_template(rule: str) -> None:
    if len(rule) > MAX_RULE:
        raise Unprocessable(f"a hostname rule has at most {MAX_RULE} characters; {_EXAMPLE}")
    try:
        parts = list(string.Formatter().parse(rule))
    except ValueError as exc:
        raise Unprocessable(f"hostname rule {rule!r} is not a valid template: {exc}") from exc
    for literal, field, spec, conversion in parts:
        if not _LITERAL.match(literal):
            raise Unprocessable(
                f"hostname rule {rule!r}: text outside fields may hold only letters, "
                f"digits and '-'; {_EXAMPLE}"
            )
        if field is None:
            continue
        if field not in _OCTETS | _TEXTS:
            raise Unprocessable(
                f"hostname rule {rule!r} uses unknown field {field!r}; "
                f"use o1, o2, o3, o4, ip or name, {_EXAMPLE}"
            )
        allowed = _OCTET_SPEC if field in _OCTETS else _TEXT_SPEC
        if conversion is not None or not allowed.match(spec or ""):
            raise Unprocessable(
                f"hostname rule {rule!r}: field {field!r} has format {spec!r}; octets take "
                "a width of 1-8 with optional zero padding and d/x/X ('03d'), ip and name "
                "at most a truncation ('.8')"
            )


def render(rule: str | None, ip: str, name: str) -> str:
    """The hostname for an instance; the instance name when there is no rule."""
    if not rule:
        return _sanitise(name)
    _check_template(rule)  # also rules stored before these checks existed
    octets = ipaddress.IPv4Address(ip).packed
    values = {f"o{i + 1}": octets[i] for i in range(4)}
    try:
        text = rule.format(ip=ip.replace(".", "-"), name=name, **values)
    except (ValueError, KeyError, IndexError) as exc:
        raise Unprocessable(f"hostname rule {rule!r} cannot render for {ip}: {exc}") from exc
    host = text.lower()
    if not _HOSTNAME.match(host):
        raise Unprocessable(
            f"hostname rule {rule!r} gives {text[:80]!r} for {ip}, which is not a valid "
            "hostname (letters, digits and '-', at most 63 characters)"
        )
    return host


def _sanitise(name: str) -> str:
    host = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    return host or "instance"
