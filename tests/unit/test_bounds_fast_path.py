"""The wire bounds' fast path (model/base.py) refuses exactly what the full walk refuses.

Every field of every model passes through ``check_scalars``, server-built ones too (a
host's desired state builds ~40 per instance), so the common values are decided
without the walk; these tests hold the two to the same answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from dockyard.model import base
from dockyard.model.base import INT64_MAX, INT64_MIN, MAX_TEXT, check_scalars


def walked(value: Any) -> str | None:
    """The full walk's verdict, the fast path bypassed."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool | base.BaseModel):
            continue
        problem = base._problem(item)
        if problem:
            return problem
        if isinstance(item, dict):
            for k, v in item.items():
                stack += [k, v]
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def verdict(value: Any) -> str | None:
    try:
        check_scalars(value)
    except PydanticCustomError as exc:
        return exc.message()
    return None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN - 5, max_value=INT64_MAX + 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(codec="ascii")),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "é\udfff", "x" * (MAX_TEXT + 1), "é" * 3]),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.sampled_from(["\x00"]), inner, max_size=3),
    max_leaves=8,
)


@given(values)
def test_the_fast_path_refuses_what_the_walk_refuses(value: Any) -> None:
    assert verdict(value) == walked(value)


@pytest.mark.parametrize(
    "value",
    [INT64_MAX + 1, INT64_MIN - 1, float("inf"), "a\x00", "\ud800", "x" * (MAX_TEXT + 1),
     [1, 2, INT64_MAX + 1], ["ok", "b\x00"], ("\udc00",)],  # fmt: skip
)
def test_values_out_of_bounds_are_still_refused(value: Any) -> None:
    assert verdict(value) is not None


@pytest.mark.parametrize(
    "value",
    [None, True, 0, INT64_MAX, -1.5, "web3053", "ünïcode", [0, 1, 2], datetime.now(UTC), {}],
)
def test_plain_values_pass(value: Any) -> None:
    assert verdict(value) is None
