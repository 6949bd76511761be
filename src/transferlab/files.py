"""Writing a file so that a crash never leaves half of one."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"\..+\.tmp\d+")


def replace_when_done(out: Path, write: Callable[[Path], object]) -> None:
    """Let ``write`` fill a temporary name beside ``out``; rename it to ``out`` only if it
    succeeds. Readers see the old file or the new one, never a partial one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`replace_when_done` (left behind only
    by a process killed while writing)."""
    return _TEMPORARY.fullmatch(name) is not None
