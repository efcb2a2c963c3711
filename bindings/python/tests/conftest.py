"""Shared fixtures. The suite runs against the installed wheel (``cargo xtask test`` builds it, installs it
into a fresh virtual environment and runs pytest there), with ``GRAFT_CACHE`` pointing at a cache that holds
MiniLM-L6 int8 and the MR data set (``cargo xtask fetch`` fetches both)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import graft


def pytest_report_header() -> str:
    return f"graft {graft.__version__} from {Path(graft.__file__).parent}"


@pytest.fixture(scope="session", autouse=True)
def installed_wheel() -> None:
    """The module and the command under test are the installed wheel's, not the source tree's."""
    prefix = Path(sys.prefix).resolve()
    assert sys.prefix != sys.base_prefix, "run the tests inside the virtual environment the wheel is in"
    assert prefix in Path(graft.__file__).resolve().parents, graft.__file__
    command = shutil.which("graft")
    assert command is not None and prefix in Path(command).resolve().parents, command


@pytest.fixture(scope="session")
def cache() -> Path:
    value = os.environ.get("GRAFT_CACHE")
    assert value, "set GRAFT_CACHE to a graft cache (cargo xtask test does)"
    return Path(value)


@pytest.fixture(scope="session")
def mr_rows(cache: Path) -> list[dict[str, str]]:
    """MR's rows (id, text, label) as the data set's CSV holds them."""
    path = cache / "datasets/mr/mr.csv"
    assert path.is_file(), f"{path} is missing: run `cargo xtask fetch` first"
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def graft_command(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """The installed ``graft`` command (the wheel's console script)."""
    return subprocess.run(["graft", *map(str, args)], capture_output=True, text=True, timeout=600)
