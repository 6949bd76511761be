"""The C allocator's thresholds for CPU training (allocator.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
from transferlab.allocator import tune_for_training
assert tune_for_training.cache_info().currsize == 0  # nothing set on import
assert tune_for_training() is True
assert tune_for_training() is True and tune_for_training.cache_info().hits == 1
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_thresholds_are_set_once_per_process_on_glibc() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
