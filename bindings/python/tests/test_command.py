"""The ``graft`` command the wheel installs: the native command line, exit codes included."""

from __future__ import annotations

from pathlib import Path

import graft
from conftest import graft_command


def test_version_matches_the_module() -> None:
    done = graft_command("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"graft {graft.__version__}"


def test_errors_exit_non_zero_with_the_message(tmp_path: Path) -> None:
    done = graft_command(
        "extract", "--model", "minilm-l6-int8", "--input", tmp_path / "missing.csv", "--text-column", "text",
        "--output", tmp_path / "out.npy",
    )
    assert done.returncode == 1
    assert "error: input not found" in done.stderr and "hint:" in done.stderr


def test_bad_command_line_exits_2() -> None:
    done = graft_command("extract", "--no-such-flag")
    assert done.returncode == 2
    assert "--no-such-flag" in done.stderr
