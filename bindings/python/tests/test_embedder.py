"""graft.Embedder: the same bytes as ``graft extract``, numpy without copies, the GIL released, errors as
exceptions."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import graft_command, write_csv

MODEL = "minilm-l6-int8"


@pytest.mark.parametrize("chunk_rows", [300, 4096])
def test_embeddings_equal_graft_extract(tmp_path: Path, mr_rows, chunk_rows: int) -> None:
    # 1,000 rows from both classes; with 300-row chunks the last chunk is partial.
    rows = mr_rows[:500] + mr_rows[-500:]
    table = write_csv(tmp_path / "rows.csv", rows)
    out = tmp_path / "embeddings.npy"
    done = graft_command(
        "extract", "--model", MODEL, "--input", table, "--text-column", "text", "--output", out,
        "--chunk-rows", chunk_rows, "--threads", 2, "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    extracted = np.load(out)

    embedder = graft.Embedder(model=MODEL, chunk_rows=chunk_rows, threads=2)
    embedded = embedder.embed([r["text"] for r in rows])

    assert embedded.shape == extracted.shape == (1000, 384)
    assert embedded.dtype == np.float32
    np.testing.assert_array_equal(embedded, extracted)


def test_array_owns_rust_buffer_without_copy(mr_rows) -> None:
    embedder = graft.Embedder(model=MODEL, threads=2)
    x = embedder.embed([r["text"] for r in mr_rows[:10]])
    assert x.shape == (10, embedder.dimension) and x.dtype == np.float32
    assert x.flags.c_contiguous and x.flags.writeable
    # numpy did not allocate: the array is a view on the buffer graft filled.
    assert not x.flags.owndata and x.base is not None
    # Normalised embeddings by default (MiniLM's sentence-transformers setting).
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_empty_input_gives_zero_rows() -> None:
    embedder = graft.Embedder(model=MODEL, threads=1)
    assert embedder.embed([]).shape == (0, 384)


def test_settings_change_the_embedding(mr_rows) -> None:
    texts = [r["text"] for r in mr_rows[:8]]
    plain = graft.Embedder(model=MODEL, threads=1).embed(texts)
    cls = graft.Embedder(model=MODEL, threads=1, pooling="cls").embed(texts)
    raw = graft.Embedder(model=MODEL, threads=1, normalize=False).embed(texts)
    prompted = graft.Embedder(model=MODEL, threads=1, prompt="review: {text}").embed(texts)
    for other in (cls, raw, prompted):
        assert not np.allclose(plain, other)
    # Unnormalised mean pooling, normalised, is the default embedding.
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), plain, atol=1e-6)


def test_gil_is_released_during_inference(mr_rows) -> None:
    embedder = graft.Embedder(model=MODEL, threads=1)
    texts = [r["text"] for r in mr_rows[:1500]]
    ticks = 0
    started = time.perf_counter()
    worker = threading.Thread(target=embedder.embed, args=(texts,))
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    seconds = time.perf_counter() - started
    # 1,500 sentences take well over a second on one thread; had the GIL been held, this loop would not have
    # run meanwhile (at most a tick or two around the call).
    assert seconds > 0.5
    assert ticks > 100, f"{ticks} ticks in {seconds:.2f} s"


def test_threads_share_one_embedder(mr_rows) -> None:
    embedder = graft.Embedder(model=MODEL, threads=1)
    texts = [r["text"] for r in mr_rows[:64]]
    expected = embedder.embed(texts)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(embedder.embed(texts))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "no-such-model"}, "no text backbone `no-such-model`"),
        ({"model": "efficientnet-lite0"}, "image backbone"),
        ({"model": MODEL, "chunk_rows": 0}, "chunk_rows must be at least 1"),
        ({"model": MODEL, "threads": 1, "sessions": 2}, "sessions 2 is more than threads 1"),
        ({"model": MODEL, "prompt": "query:"}, "no {text} placeholder"),
        ({"model": "model.onnx"}, "--tokenizer is missing"),
    ],
)
def test_bad_settings_raise_graft_error(settings, message: str) -> None:
    with pytest.raises(graft.GraftError) as raised:
        graft.Embedder(**settings)
    assert message in str(raised.value)
    assert "hint:" in str(raised.value)


def test_bad_arguments_raise_python_errors() -> None:
    with pytest.raises(ValueError, match="pooling"):
        graft.Embedder(model=MODEL, pooling="max")
    with pytest.raises(ValueError, match="provider"):
        graft.Embedder(model=MODEL, provider="tpu")
    embedder = graft.Embedder(model=MODEL, threads=1)
    # Said in words a Python user acts on (it used to be "Can't extract `str` to `Vec`").
    with pytest.raises(TypeError, match=r"not one str: wrap it in a list, embed\(\[text\]\)"):
        embedder.embed("one string, not a list")
    with pytest.raises(TypeError, match="embed takes a list of str"):
        embedder.embed([1, 2, 3])


INTERRUPTED = """
import os, signal, sys, threading, time
import graft
# Python leaves SIGINT ignored when its parent ignored it (a job started with `&` by a script): restore the
# handler a terminal user has.
signal.signal(signal.SIGINT, signal.default_int_handler)
texts = [line for line in sys.stdin.read().splitlines() if line]
embedder = graft.Embedder(model="minilm-l6-int8", threads=1, batch_size=16)
embedder.embed(texts[:16])
started = time.monotonic()
if sys.argv[1] == "whole":
    embedder.embed(texts)
    print(time.monotonic() - started)
    sys.exit(0)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    embedder.embed(texts)
except KeyboardInterrupt:
    print(time.monotonic() - started - 0.5)
    sys.exit(0)
sys.exit("embed finished without seeing the interrupt")
"""


def test_ctrl_c_stops_embed_within_a_round_of_batches_not_a_chunk(mr_rows) -> None:
    # 1,500 texts are one chunk (4,096 rows by default): before, Ctrl-C waited for the whole chunk.
    texts = "\n".join(row["text"].replace("\n", " ") for row in mr_rows[:1500])

    def run(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", INTERRUPTED, mode], input=texts, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return float(done.stdout.strip())

    whole = run("whole")
    waited = run("interrupt")
    # One round is one batch of 16 rows on one session: a small part of the chunk.
    assert waited < whole / 4, f"interrupt took {waited:.2f} s to land; the whole chunk takes {whole:.2f} s"


def test_a_model_folder_brings_its_sentence_transformers_settings(tmp_path: Path, cache: Path, mr_rows) -> None:
    # A Hugging Face-style folder of the registered MiniLM whose pooling config says CLS.
    package = cache / "models/minilm-l6-int8"
    folder = tmp_path / "minilm-cls"
    (folder / "onnx").mkdir(parents=True)
    (folder / "1_Pooling").mkdir()
    shutil.copy(package / "model.onnx", folder / "onnx/model.onnx")
    shutil.copy(package / "tokenizer.json", folder / "tokenizer.json")
    (folder / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},'
        ' {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]'
    )
    (folder / "1_Pooling/config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}'
    )
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    rows = mr_rows[:40]
    texts = [r["text"] for r in rows]

    from_folder = graft.Embedder(model=folder, threads=1).embed(texts)
    np.testing.assert_array_equal(
        from_folder, graft.Embedder(model=MODEL, threads=1, pooling="cls", max_length=128).embed(texts)
    )
    out = tmp_path / "folder.npy"
    done = graft_command(
        "extract", "--model", folder, "--input", write_csv(tmp_path / "rows.csv", rows), "--text-column", "text",
        "--output", out, "--threads", 1, "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(from_folder, np.load(out))


def test_long_texts_in_chunks_equal_graft_extract_and_pool_their_windows(tmp_path: Path, mr_rows) -> None:
    # Documents of 10 MR sentences each: longer than a 32-token window, so each is several windows.
    texts = [r["text"] for r in mr_rows[:200]]
    documents = [" ".join(texts[i : i + 10]) for i in range(0, 200, 10)]
    table = write_csv(tmp_path / "docs.csv", [{"text": d, "label": "x"} for d in documents])
    out = tmp_path / "embeddings.npy"
    done = graft_command(
        "extract", "--model", MODEL, "--input", table, "--text-column", "text", "--output", out,
        "--max-length", 32, "--long-texts", "chunks", "--stride", 20, "--threads", 2, "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "embedded in windows" in done.stdout
    chunked = graft.Embedder(model=MODEL, max_length=32, long_texts="chunks", stride=20, threads=2)
    embedded = chunked.embed(documents)
    np.testing.assert_array_equal(embedded, np.load(out))
    truncated = graft.Embedder(model=MODEL, max_length=32, threads=2).embed(documents)
    # Whole documents differ from their first 32 tokens; a short text is one window either way.
    assert np.all(np.abs(embedded - truncated).max(axis=1) > 1e-3)
    np.testing.assert_array_equal(chunked.embed(["a fine film"]), graft.Embedder(
        model=MODEL, max_length=32, threads=2).embed(["a fine film"]))
    # Max pooling is another row, still unit length.
    maxed = graft.Embedder(model=MODEL, max_length=32, long_texts="chunks", chunk_pooling="max", threads=2)
    pooled = maxed.embed(documents)
    assert not np.allclose(pooled, embedded)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-5)


def test_long_text_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="long_texts"):
        graft.Embedder(model=MODEL, long_texts="split")
    with pytest.raises(ValueError, match="chunk_pooling"):
        graft.Embedder(model=MODEL, long_texts="chunks", chunk_pooling="median")
    with pytest.raises(ValueError, match="apply to long_texts"):
        graft.Embedder(model=MODEL, stride=10)
    with pytest.raises(graft.GraftError, match="stride"):
        graft.Embedder(model=MODEL, max_length=32, long_texts="chunks", stride=31)
