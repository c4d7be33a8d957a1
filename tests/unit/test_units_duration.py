"""Durations on the CLI (``--snapshot-every 6h``) and back in words."""

import pytest

from dockyard import units


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("6h", 21600),
        ("90m", 5400),
        ("15min", 900),
        ("1d", 86400),
        ("2w", 1209600),
        ("30s", 30),
        ("3600", 3600),
        ("1.5h", 5400),
        (" 6H ", 21600),
    ],
)
def test_durations_parse_to_seconds(text, seconds):
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["6 parsecs", "-6h", "h", "", "6hh", "1e3"])
def test_nonsense_is_refused_with_an_example(text):
    with pytest.raises(ValueError, match="6h"):
        units.parse_duration(text)


@pytest.mark.parametrize(
    "seconds, text", [(21600, "6h"), (5400, "90m"), (86400, "1d"), (90, "90s"), (900, "15m")]
)
def test_durations_read_back_in_the_largest_exact_unit(seconds, text):
    assert units.format_duration(seconds) == text
