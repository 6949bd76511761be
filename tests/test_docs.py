"""The documentation site builds offline in strict mode (a broken link, nav entry or API
reference fails), with the CLI reference generated from every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO
from transferlab.cli import app


def test_docs_build_strict_with_every_command_and_the_api(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        assert f"transferlab {name.replace('_', '-')}" in cli, name
    assert "--image-size" in cli and "--tta" in cli
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("train", "load", "compare", "models", "lr_find", "Run", "Model", "Leaderboard"):
        assert f"transferlab.api.{name}" in api, name
    for page in ("compare-backbones", "strategies", "warmup-unfreeze", "webcam", "tta"):
        assert (site / "tutorials" / page / "index.html").is_file(), page
    assert (site / "tutorials" / "time-budget" / "index.html").is_file()
    assert (site / "scale-out" / "index.html").is_file()
    assert "--devices" in cli and "--time-budget" in cli and "--parallel" in cli
