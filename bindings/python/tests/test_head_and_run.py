"""graft.run and graft.Head: a pipeline run from Python, its head scoring texts and features exactly as
``graft predict`` does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import graft_command, write_csv

PIPELINE = """\
schema = 1
name = "python-tiny"
seed = 7

[data]
path = "rows.csv"
text_column = "text"
label_column = "label"

[split.stratified]
train = 0.6
validation = 0.2
test = 0.2

[backbone]
model = "minilm-l6-int8"
threads = 2

[head.logistic]
c = 1.0
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mr_rows, cache: Path) -> tuple[dict, list[dict[str, str]], Path]:
    folder = tmp_path_factory.mktemp("tiny-run")
    rows = mr_rows[:200] + mr_rows[-200:]
    write_csv(folder / "rows.csv", rows)
    (folder / "pipeline.toml").write_text(PIPELINE)
    metrics = graft.run(folder / "pipeline.toml", runs_dir=folder / "runs", progress=False)
    return metrics, rows, folder


def test_run_returns_the_metrics_it_wrote(tiny_run) -> None:
    metrics, _, folder = tiny_run
    metrics = dict(metrics)
    run_dir = Path(metrics.pop("run_dir"))
    assert run_dir.parent.parent == folder / "runs"
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    assert metrics["pipeline"] == "python-tiny"
    assert metrics["classes"] == ["negative", "positive"]
    assert metrics["rows"]["test"] == 80


def test_head_scores_texts_as_graft_predict_does(tiny_run) -> None:
    metrics, rows, folder = tiny_run
    head = graft.Head.load(metrics["run_dir"])
    assert head.name == "logistic" and head.classes == ["negative", "positive"] and head.n_features == 384
    texts = [r["text"] for r in rows]
    proba = head.predict_proba(texts)
    assert proba.shape == (400, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)

    out = folder / "predictions.csv"
    done = graft_command(
        "predict", metrics["run_dir"], folder / "rows.csv", "--text-column", "text",
        "--output", out, "--threads", 2, "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        written = list(csv.DictReader(f))
    expected = np.array([[float(r["p_negative"]), float(r["p_positive"])] for r in written], dtype=np.float32)
    # The CSV holds each float32 in its shortest decimal form.
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-7)


def test_head_scores_features_of_the_run_backbone(tiny_run) -> None:
    metrics, rows, _ = tiny_run
    head = graft.Head.load(metrics["run_dir"])
    texts = [r["text"] for r in rows[:50]]
    features = graft.Embedder(model="minilm-l6-int8", threads=2, max_length=256).embed(texts)
    np.testing.assert_array_equal(head.predict_proba(features), head.predict_proba(texts))
    np.testing.assert_array_equal(
        head.predict_proba(features.astype(np.float64)), head.predict_proba(features)
    )


def test_head_refuses_bad_features(tiny_run) -> None:
    metrics, _, _ = tiny_run
    head = graft.Head.load(metrics["run_dir"])
    with pytest.raises(graft.GraftError, match="the features are 3-d but the head expects 384"):
        head.predict_proba(np.zeros((2, 3), dtype=np.float32))
    bad = np.zeros((2, 384), dtype=np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(graft.GraftError, match="feature 5 of row 1 is NaN"):
        head.predict_proba(bad)
    with pytest.raises(TypeError, match="2-D"):
        head.predict_proba(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="list of texts or a 2-D numpy array"):
        head.predict_proba(42)


def test_head_load_errors_name_the_problem(tiny_run, tmp_path: Path) -> None:
    metrics, _, _ = tiny_run
    with pytest.raises(graft.GraftError, match="is not a graft run folder"):
        graft.Head.load(tmp_path)
    with pytest.raises(graft.GraftError, match="the run has no head `mlp`"):
        graft.Head.load(metrics["run_dir"], "mlp")


def test_run_errors_point_at_the_line(tmp_path: Path, mr_rows) -> None:
    write_csv(tmp_path / "rows.csv", mr_rows[:20] + mr_rows[-20:])
    bad = tmp_path / "bad.toml"
    bad.write_text(PIPELINE.replace("c = 1.0", "c = -1.0"))
    line = PIPELINE.splitlines().index("c = 1.0") + 1
    with pytest.raises(graft.GraftError) as raised:
        graft.run(bad, runs_dir=tmp_path / "runs")
    message = str(raised.value)
    assert f"{bad}:{line}:5" in message and "c = -1.0" in message and "invalid value for `c`" in message
    assert not (tmp_path / "runs").exists()


def test_head_refuses_another_backbone_at_load(tiny_run) -> None:
    metrics, _, _ = tiny_run
    # The float32 MiniLM-L6 is not the int8 graph the head was trained on.
    with pytest.raises(graft.GraftError, match="but the head was trained on features of"):
        graft.Head.load(metrics["run_dir"], model="minilm-l6")


def test_head_on_given_features_scores_features_only(tmp_path: Path) -> None:
    pipeline = Path(__file__).resolve().parents[3] / "fixtures/pipelines/tiny-features.toml"
    metrics = graft.run(pipeline, runs_dir=tmp_path, progress=False)
    head = graft.Head.load(metrics["run_dir"])
    assert head.n_features == 6
    proba = head.predict_proba(np.zeros((3, 6)))
    assert proba.shape == (3, len(head.classes))
    with pytest.raises(graft.GraftError, match="trained on given features"):
        head.predict_proba(["a text"])
