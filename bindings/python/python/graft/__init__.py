"""graft from Python: embed texts with a frozen ONNX backbone, score rows with a run's saved head, run
pipeline files. The same engine as the ``graft`` command (installed with this package).

>>> import graft
>>> embedder = graft.Embedder(model="minilm-l6-int8")          # doctest: +SKIP
>>> embedder.embed(["a fine film", "a dull film"]).shape       # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import json
import os
from typing import Any

# ONNX Runtime's telemetry stays off (its documented opt-out, read when the runtime initialises): graft
# writes nothing outside its cache, the run folder and the outputs you name. GRAFT_ONNXRUNTIME_TELEMETRY=1
# leaves the environment as it is.
if os.environ.get("GRAFT_ONNXRUNTIME_TELEMETRY", "").strip().lower() not in ("1", "on", "true", "yes"):
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from graft._graft import Embedder, GraftError, Head, __version__
from graft._graft import run as _run

__all__ = ["Embedder", "GraftError", "Head", "run", "__version__"]


def run(
    pipeline: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a pipeline file end to end, as ``graft run`` does; return its ``metrics.json`` as a dict, with the
    run folder under ``"run_dir"`` (pass it to :meth:`Head.load`)."""
    return json.loads(_run(pipeline, cache_dir=cache_dir, runs_dir=runs_dir, progress=progress))
