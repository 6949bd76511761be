"""The time budget (issue 12): durations, the probe and plan, stopping in time."""

from __future__ import annotations

import pytest

from transferlab.budget import parse_duration
from transferlab.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2h", 7200), ("45", 45), ("2m30s", 150)],
)
def test_parse_duration_accepts_the_documented_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "0", "-5", "1x", "1m1h", "h", "nan"])
def test_parse_duration_refuses_anything_else_naming_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--time-budget .*use seconds \(45, 90s\)") as err:
        parse_duration(text)
    assert "\n" not in str(err.value) and "1h30m" in str(err.value)
