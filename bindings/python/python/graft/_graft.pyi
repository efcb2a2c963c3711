"""Type stubs of graft's extension module."""

import os
from collections.abc import Sequence
from typing import Literal, final

import numpy as np
import numpy.typing as npt

__all__ = ["GraftError", "Embedder", "Head", "run", "main", "__version__"]

__version__: str

class GraftError(Exception):
    """An error graft reports: bad input, a missing or damaged file, a model that cannot run. The message
    says what and where, and its ``hint:`` line what to do."""

@final
class Embedder:
    """A frozen text backbone in this process. Texts are cut into chunks of ``chunk_rows`` and each chunk is
    length-sorted and batched as ``graft extract`` does a file, so the same rows and settings give the same
    bytes as ``graft extract``. Texts longer than ``max_length`` tokens are truncated, or with
    ``long_texts="chunks"`` embedded in windows of ``max_length`` tokens (``stride`` tokens apart) and
    pooled (``chunk_pooling``: mean or max) into one row."""

    dimension: int
    model: str
    provider: str

    def __new__(
        cls,
        model: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        max_length: int | None = None,
        long_texts: Literal["truncate", "chunks"] = "truncate",
        stride: int | None = None,
        chunk_pooling: Literal["mean", "max"] | None = None,
        pooling: Literal["mean", "cls"] | None = None,
        normalize: bool | None = None,
        output_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 16,
        threads: int | None = None,
        sessions: int | None = None,
        chunk_rows: int = 4096,
        provider: Literal["cpu", "cuda"] = "cpu",
        device_id: int = 0,
        fallback: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Embedder:
        """``model``: a registry name (``minilm-l6-int8``), a model folder, or an ``.onnx`` file with
        ``tokenizer``. Fetches and verifies what it needs into the cache (``$GRAFT_CACHE``, else
        ``~/.cache/graft``)."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``; returns an array of shape ``(len(texts), dimension)`` that owns graft's buffer.
        The GIL is released while the model runs."""

@final
class Head:
    """A run's saved head."""

    name: str
    classes: list[str]
    n_features: int
    thresholds: list[float] | None

    @staticmethod
    def load(
        run_dir: str | os.PathLike[str],
        head: str | None = None,
        *,
        model: str | os.PathLike[str] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        batch_size: int = 16,
        threads: int | None = None,
        provider: Literal["cpu", "cuda"] = "cpu",
        device_id: int = 0,
        fallback: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Head:
        """Load head ``head`` (default: the headline) of the run in ``run_dir``. ``model`` replaces the
        recorded backbone and must be the very graph the head was trained on."""

    def predict_proba(
        self, rows: Sequence[str] | npt.NDArray[np.float32] | npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        """Each class's probability for each row: texts (embedded by the run's backbone with the run's
        settings) or a 2-D array of features."""

def run(
    pipeline: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> str: ...
def main(argv: list[str]) -> int: ...
