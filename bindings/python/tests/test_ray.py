"""Ray Data: deploy/ray/extract.py on a local Ray (two actors, each with one graft.Embedder) gives
``graft extract``'s bytes, rows in input order. Runs where ``cargo xtask test`` installed Ray
(bindings/python/requirements/cp311.txt: CPython 3.11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import graft_command, write_csv

ray = pytest.importorskip("ray", reason="Ray is not installed (its pinned wheels are CPython 3.11's)")

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy/ray/extract.py"


def test_ray_actors_reproduce_graft_extract(tmp_path: Path, mr_rows) -> None:
    # 1,300 rows in 500-row chunks: three blocks over two actors, the last one partial.
    rows = mr_rows[:650] + mr_rows[-650:]
    table = write_csv(tmp_path / "rows.csv", rows)
    single = tmp_path / "extract.npy"
    done = graft_command(
        "extract", "--model", "minilm-l6-int8", "--input", table, "--text-column", "text", "--output", single,
        "--chunk-rows", 500, "--threads", 1, "--no-progress",
    )
    assert done.returncode == 0, done.stderr

    out = tmp_path / "ray.npy"
    ran = subprocess.run(
        [
            sys.executable, str(EXAMPLE), "--input", str(table), "--output", str(out), "--chunk-rows", "500",
            "--actors", "2", "--threads", "1", "--compare", str(single),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "on 2 Ray actors" in ran.stdout and "identical to" in ran.stdout
    np.testing.assert_array_equal(np.load(out), np.load(single))
