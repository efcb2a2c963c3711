"""The Python module on a machine where it has never run: a fresh home and XDG folders. Embedding writes
nothing outside graft's cache, ONNX Runtime's telemetry queue included — whether the user's own
``onnxruntime`` package is imported before graft or after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EMBED = """
import graft
embedder = graft.Embedder(model="minilm-l6-int8", threads=1)
assert embedder.embed(["a fine film", "a dull film"]).shape == (2, 384)
"""


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_fresh(tmp_path: Path, code: str) -> list[str]:
    """Runs `code` in a new interpreter whose home and XDG folders are empty; returns what it created there."""
    home = tmp_path / "machine"
    folders = {name: home / name for name in ("home", "cache", "config", "data", "state", "tmp")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    unset = ("ORT_DISABLE_TELEMETRY", "GRAFT_ONNXRUNTIME_TELEMETRY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        HOME=str(folders["home"]),
        XDG_CACHE_HOME=str(folders["cache"]),
        XDG_CONFIG_HOME=str(folders["config"]),
        XDG_DATA_HOME=str(folders["data"]),
        XDG_STATE_HOME=str(folders["state"]),
        TMPDIR=str(folders["tmp"]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    created = [p for p in listing(home) if p not in folders]
    return created


def test_embedding_in_a_fresh_home_writes_nothing_there(tmp_path: Path) -> None:
    # GRAFT_CACHE (the suite's cache) stays set: the model is read from there, not fetched again.
    assert run_fresh(tmp_path, EMBED) == []


def test_onnxruntime_imported_after_graft_stays_quiet_too(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="its pinned wheel is CPython 3.11's (requirements/cp311.txt)")
    created = run_fresh(tmp_path, EMBED + "\nimport onnxruntime\nonnxruntime.get_available_providers()\n")
    assert created == []


def test_onnxruntime_imported_first_is_its_own_and_graft_adds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="its pinned wheel is CPython 3.11's (requirements/cp311.txt)")
    # The user's onnxruntime, imported before graft, may write its own queue (from a thread of its own, so
    # not always before the process ends); graft cannot take that back, and adds nothing of its own.
    # Its telemetry also keeps a session marker in TMPDIR (`.ses`); neither appears when graft comes first.
    queue = "cache/Microsoft/DeveloperTools/.onnxruntime"
    created = run_fresh(tmp_path, "import onnxruntime\n" + EMBED)
    allowed = {"cache/Microsoft", "cache/Microsoft/DeveloperTools", queue, "tmp/.ses"}
    assert all(p in allowed or p.startswith(queue + "/") for p in created), created
