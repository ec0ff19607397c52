"""A list of images predicted by `predict` itself, read back from the files it wrote.

What calibrate screens a split with (`pipeline.screen.screened_split`) and what a training records its drift baseline
with (`pipeline.training.drift_baseline`): the same decoding, letterbox, runtime and NMS a screening run has, and
the same drift sample (`pipeline.inference.drift_check.SAMPLE`), so neither side can differ from what predict sees.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.inference.options import RunOptions

if TYPE_CHECKING:
    from pipeline.drift import Sample


@dataclass
class Listed:
    """What predict wrote for the listed images: a record per image predicted, a record per image it could not read,
    its settings (run.json: the classes, the model's SHA-256, the thresholds) and what its drift check saw."""

    records: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl, in the listing's order
    errors: list[dict[str, Any]] = field(default_factory=list)  # errors.jsonl: path and reason
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None  # the MLflow run of the model, when it came from MLflow
    seen: Sample | None = None  # every image predicted (None when predict kept no drift sample)


def predict_listed(paths: list[str], model: str, options: RunOptions) -> Listed:
    """``paths`` (absolute) predicted by ``model`` as ``options`` say (at their conf), in a folder of its own that is
    gone afterwards."""
    from pipeline.drift import Baseline
    from pipeline.inference.drift_check import SAMPLE
    from pipeline.inference.engine import predict
    from pipeline.inference.results import ERRORS, PREDICTIONS, SETTINGS

    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-listed-") as tmp:
        folder = Path(tmp)
        listing = folder / "images.txt"
        listing.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
        out = folder / "predicted"
        found = predict(listing, model, out, options, progress=False)
        listed = Listed(
            records=_lines(out / PREDICTIONS),
            errors=_lines(out / ERRORS),
            settings=json.loads((out / SETTINGS).read_text(encoding="utf-8")),
            run_id=found.run_id,
        )
        if (out / SAMPLE).exists():
            listed.seen = Baseline.load(out / SAMPLE).sample
    return listed


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
