"""Writing a file so that a crash never leaves half of one."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"\..*\.tmp\d+(\.[^.]*)?")


def replace_when_done(out: Path, write: Callable[[Path], object]) -> None:
    """Let ``write`` fill a temporary name beside ``out``; rename it to ``out`` only if it
    succeeds. Readers see the old file or the new one, never a partial one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: writers that pick a format by it (OpenCV's video) still can.
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`replace_when_done` (left behind only
    by a process killed while writing)."""
    return _TEMPORARY.fullmatch(name) is not None
