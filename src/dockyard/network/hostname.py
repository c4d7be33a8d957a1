"""Per-subnet hostname rules: a template over the IP's octets.

``web{o3}{o4:03d}`` gives ``web3053`` for 10.15.3.53, the seed's naming.
Fields: o1..o4 (octets, ints), ip (dotted string), name (instance name).
"""

from __future__ import annotations

import ipaddress
import re
import string

from dockyard.errors import Unprocessable

_FIELDS = {"o1", "o2", "o3", "o4", "ip", "name"}
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_rule(rule: str) -> None:
    """Raise Unprocessable unless ``rule`` renders a valid hostname."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(rule) if f is not None}
    except ValueError as exc:
        raise Unprocessable(f"hostname rule {rule!r} is not a valid template: {exc}") from exc
    unknown = fields - _FIELDS
    if unknown:
        raise Unprocessable(
            f"hostname rule {rule!r} uses unknown field(s) {sorted(unknown)}; "
            f"use o1, o2, o3, o4, ip or name, e.g. 'web{{o3}}{{o4:03d}}'"
        )
    render(rule, "198.18.3.53", "example")


def render(rule: str | None, ip: str, name: str) -> str:
    """The hostname for an instance; the instance name when there is no rule."""
    if not rule:
        return _sanitise(name)
    octets = ipaddress.IPv4Address(ip).packed
    values = {f"o{i + 1}": octets[i] for i in range(4)}
    try:
        text = rule.format(ip=ip.replace(".", "-"), name=name, **values)
    except (ValueError, KeyError, IndexError) as exc:
        raise Unprocessable(f"hostname rule {rule!r} cannot render for {ip}: {exc}") from exc
    host = text.lower()
    if not _HOSTNAME.match(host):
        raise Unprocessable(
            f"hostname rule {rule!r} gives {text!r} for {ip}, which is not a valid hostname "
            "(letters, digits and '-', at most 63 characters)"
        )
    return host


def _sanitise(name: str) -> str:
    host = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    return host or "instance"
