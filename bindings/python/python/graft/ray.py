"""graft on Ray Data: one :class:`graft.Embedder` per actor.

>>> import ray, graft.ray                                              # doctest: +SKIP
>>> ds = ray.data.read_csv("reviews.csv")                              # doctest: +SKIP
>>> ds = ds.map_batches(graft.ray.Embed, fn_constructor_kwargs={"model": "minilm-l6-int8"},
...                     batch_size=graft.ray.CHUNK_ROWS, concurrency=2)  # doctest: +SKIP

``graft extract`` length-sorts and batches each chunk of ``CHUNK_ROWS`` consecutive rows. Batches of
``CHUNK_ROWS`` rows that start at a multiple of it (blocks cut by ``repartition(target_num_rows_per_block=
CHUNK_ROWS, strict=True)``, order preserved) give its bytes for any graph. Other batches give the same bytes
too unless the graph has batch-dependent operators (``DynamicQuantizeLinear``: one activation scale per
batch); MiniLM-L6 int8 has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graft._graft import Embedder

__all__ = ["CHUNK_ROWS", "Embed"]

#: ``graft extract``'s default chunk: the batch size that reproduces its output exactly.
CHUNK_ROWS = 4096


class Embed:
    """A callable class for ``Dataset.map_batches``: each actor opens the backbone once and embeds the
    ``text_column`` of every batch it is given into ``output_column`` (a float32 tensor column)."""

    def __init__(
        self,
        model: str,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        **settings: Any,
    ) -> None:
        self._text_column = text_column
        self._output_column = output_column
        settings.setdefault("chunk_rows", CHUNK_ROWS)
        self._embedder = Embedder(model, **settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._text_column not in batch:
            raise KeyError(
                f"graft.ray.Embed: the batch has no column {self._text_column!r} (its columns: "
                f"{', '.join(batch)}); pass text_column= in fn_constructor_kwargs"
            )
        texts = [str(t) for t in batch[self._text_column]]
        out = dict(batch)
        out[self._output_column] = self._embedder.embed(texts)
        return out
