"""The same prediction as a Ray Data pipeline, for folders larger than one machine should take on.

Ray starts on demand (`pipeline.ray_local`: ``$RAY_ADDRESS``'s cluster, else a local one on
127.0.0.1). Paths stream in chunks into ``ray.data``; ``map_batches`` hands each batch to a pool of actors, each holding the
detector (loaded once per actor, from the same model source) and running the local engine's own
steps on it (`pipeline.inference.batching`): decode, letterbox or tile, one model call per input
shape, merge. Rows come back to this process in order (``preserve_order``), where they are written
exactly as the local engine writes them, so the files, the resume and the summary are the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np

from pipeline.drift import ImageStatistics
from pipeline.inference.batching import Outcome, Tiling, outcome_of, prepare, run_batches
from pipeline.inference.errors import ResultsError
from pipeline.inference.options import PredictOptions

CHUNK = 4096  # paths per Ray dataset: memory holds one chunk's paths and rows, whatever the folder's size


class _PredictActor:
    """A Ray actor: the detector, loaded once, applied to batches of paths."""

    def __init__(self, source: str, options: PredictOptions):
        from pipeline.cpu import LoadProbe
        from pipeline.inference.opening import build_detector, open_model

        load = LoadProbe()  # over the model's load (see `build_detector`)
        self.detector = build_detector(open_model(source, options.tracking_uri), options, load)
        self.tiling = Tiling(options.tile, options.overlap, observe=options.drift)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = (prepare(os.fsdecode(path), self.detector, False, self.tiling) for path in batch["path"])
        rows: dict[str, list[Any]] = {"path": [], "height": [], "width": [], "detections": [], "error": [], "seen": []}
        for item in run_batches(items, self.detector, len(batch["path"])):
            outcome = outcome_of(item, self.detector)
            rows["path"].append(os.fsencode(outcome.path))  # bytes: Arrow strings must be UTF-8, names need not be
            rows["height"].append(outcome.shape[0])
            rows["width"].append(outcome.shape[1])
            rows["detections"].append(json.dumps(outcome.detections))
            rows["error"].append(outcome.error)
            rows["seen"].append(json.dumps(_seen(outcome)))  # the drift check's, as JSON: Arrow needs one type
        return {key: np.array(values) for key, values in rows.items()}


def _seen(outcome: Outcome) -> dict[str, Any]:
    """What the drift check needs of an image besides its detections: its statistics and embedding, if measured."""
    seen: dict[str, Any] = {}
    if outcome.statistics is not None:
        seen["statistics"] = list(outcome.statistics.values())
    if outcome.embedding is not None:
        seen["embedding"] = [float(v) for v in outcome.embedding]
    return seen


def _start_ray() -> Any:
    from pipeline.ray_local import RayUnavailable, start_ray

    try:
        ray = start_ray()
    except RayUnavailable as exc:
        raise ResultsError(f"--engine ray: {exc}") from None
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def ray_outcomes(paths: Iterator[str], source: str, options: PredictOptions) -> Iterator[Outcome]:
    """Each path's `Outcome`, in the order of ``paths``, computed by Ray actors running the model of ``source``."""
    ray = _start_ray()
    while chunk := list(islice(paths, CHUNK)):
        dataset = ray.data.from_items([{"path": os.fsencode(path)} for path in chunk]).map_batches(
            _PredictActor,
            fn_constructor_kwargs={"source": source, "options": options},
            batch_size=options.batch,
            batch_format="numpy",
            concurrency=max(1, options.workers),
        )
        for row in dataset.iter_rows():
            seen = json.loads(str(row["seen"]))
            yield Outcome(
                os.fsdecode(row["path"]),
                (int(row["height"]), int(row["width"])),
                json.loads(str(row["detections"])),
                str(row["error"]),
                statistics=ImageStatistics(*seen["statistics"]) if "statistics" in seen else None,
                embedding=np.asarray(seen["embedding"], dtype=np.float32) if "embedding" in seen else None,
            )
