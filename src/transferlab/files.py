"""Writing a file so that a crash never leaves half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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
