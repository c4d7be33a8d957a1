"""Tables and JSON for list/show commands."""

from __future__ import annotations

import json
import sys

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    Column: TypeAlias = tuple[str, Callable[[dict[str, Any]], Any]]


def emit(data: Any, fmt: str, columns: Sequence[Column]) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    if not isinstance(data, list):
        _pairs(data)
        return
    table([[_cell(get(r)) for _, get in columns] for r in rows], [h for h, _ in columns])


def table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for r in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    sys.stdout.flush()


def _pairs(obj: dict[str, Any]) -> None:
    width = max(len(k) for k in obj)
    for key, value in obj.items():
        print(f"{key:<{width}}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str) if value else "-"
    return str(value)
