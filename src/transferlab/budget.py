"""Durations for the time budget (``train --time-budget 15m``, ``compare --time-budget``).

Light on purpose (no torch): the CLI and ``import transferlab`` read durations. The probe
is :mod:`transferlab.speed_probe`; the plan and the stop are :mod:`transferlab.budget_plan`.
"""

from __future__ import annotations

import re

from transferlab.errors import ConfigError

DURATION_FORMS = "seconds (45, 90s), minutes (15m), hours (2h) or a mix (1h30m, 2m30s)"
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str | float, option: str = "--time-budget") -> float:
    """Seconds in ``text``: ``"45"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1h30m"``; a number
    is taken as seconds. Anything else, or zero, is a ConfigError naming the accepted forms.

    Examples:
        >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration("45")
        (5400.0, 90.0, 45.0)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        seconds = _parse_text(str(text), option)
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{option} {text} is not a duration above 0; use {DURATION_FORMS}")
    return seconds


def _parse_text(text: str, option: str) -> float:
    clean = text.strip().lower().replace(" ", "")
    try:
        return float(clean)
    except ValueError:
        pass
    match = _DURATION.fullmatch(clean)
    if not clean or match is None or not any(match.groups()):
        raise ConfigError(f"{option} '{text}' is not a duration; use {DURATION_FORMS}")
    hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def format_duration(seconds: float) -> str:
    """``"1h02m"``, ``"14m30s"``, ``"45s"``: how the plan and the errors show a duration."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
