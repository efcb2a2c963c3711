"""The type stubs that ship in the wheel agree with the extension module (mypy's stubtest), and a user's
typed code checks against them. Runs where ``cargo xtask test`` installed mypy
(bindings/python/requirements/cp311.txt: CPython 3.11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (its pinned wheels are CPython 3.11's)")


def mypy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.mark.parametrize("module", ["graft._graft", "graft.ray"])
def test_stubs_match_the_module(module: str, tmp_path: Path) -> None:
    done = mypy("mypy.stubtest", module, "--mypy-config-file", str(tmp_path / "none.ini"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_user_code_type_checks_against_the_stubs(tmp_path: Path) -> None:
    (tmp_path / "use.py").write_text(
        "import numpy as np\n"
        "import numpy.typing as npt\n"
        "import graft\n"
        "embedder = graft.Embedder('minilm-l6-int8', threads=2, pooling='mean')\n"
        "x: npt.NDArray[np.float32] = embedder.embed(['a'])\n"
        "head = graft.Head.load('runs/x', 'logistic')\n"
        "p: npt.NDArray[np.float32] = head.predict_proba(x)\n"
        "metrics: dict[str, object] = graft.run('pipeline.toml')\n"
        "width: int = embedder.dimension\n"
    )
    (tmp_path / "misuse.py").write_text("import graft\ngraft.Embedder('m', pooling='max', thread=2)\n")
    good = mypy("mypy", "--strict", "use.py", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy("mypy", "--strict", "misuse.py", cwd=tmp_path)
    assert bad.returncode == 1
    assert "'max'" in bad.stdout and '"thread"' in bad.stdout, bad.stdout
