"""The baseline: what the model saw on its calibration split, saved beside the screen so that every later run can
be compared with it (``drift_baseline.npz``).

One ``.npz`` file: the samples as plain arrays and the metadata as a JSON string, so that it loads with
``allow_pickle=False`` (a baseline from elsewhere runs no code). The file's bytes depend on its content only (the
zip entries carry a fixed date), so ``digest()`` is the same for the same baseline, written today or tomorrow.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.drift.statistics import STATISTICS, Collector, ImageStatistics, Sample
from pipeline.files import replaced_whole
from pipeline.messages import UserError

FORMAT = "pipeline.drift.baseline"
VERSION = 1
FILENAME = "drift_baseline.npz"
# The file's digest, as a tag: on a model version, its training run, and each run compared with it.
DIGEST_TAG = "pipeline.drift.baseline"
CALIBRATION, TRAINING = "calibration", "training"  # what recorded a baseline (its `origin`)
ORIGINS = {CALIBRATION: "the calibration split", TRAINING: "the training's validation split"}  # as a line names it
_ARRAYS = (
    "statistics",
    "detection_image",
    "detection_class",
    "detection_score",
    "embeddings",
    "embedding_image",
)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BaselineError(UserError):
    """A baseline file that cannot be read: damaged, foreign, or from another version of the statistics."""


@dataclass
class Baseline:
    """The calibration split's sample and where it came from (the model, the data, the split, when)."""

    sample: Sample
    model_sha256: str = ""
    data: str = ""
    split: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the caller wants kept (JSON)
    _digest: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_collector(cls, collector: Collector, **metadata: Any) -> Baseline:
        """The baseline of what ``collector`` holds; ``metadata``: model_sha256, data, split, created, extra."""
        return cls(sample=collector.sample(), **metadata)

    @property
    def images(self) -> int:
        return self.sample.images

    @property
    def thresholds(self) -> dict[str, float]:
        return self.sample.thresholds

    @property
    def origin(self) -> str:
        """What recorded it: CALIBRATION (calibrate's split at the screen's thresholds) or TRAINING (the end of a
        training, its validation split at predict's default conf); kept in ``extra`` ("origin")."""
        return str(self.extra.get("origin", CALIBRATION))

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_sha256": self.model_sha256,
            "data": self.data,
            "split": self.split,
            "created": self.created,
            "images": self.images,
            "thresholds": self.sample.thresholds,
            "statistics": list(STATISTICS),
            "classes": self.sample.classes,
            "names": self.sample.names,
            "embedding_dim": int(self.sample.embeddings.shape[1]) if len(self.sample.embeddings) else 0,
            "extra": self.extra,
        }

    def to_bytes(self) -> bytes:
        """The file's bytes: an ``.npz`` (zip of ``.npy``) whose entries have a fixed date, so equal baselines give
        equal bytes."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            arrays = {name: getattr(self.sample, name) for name in _ARRAYS}
            arrays["metadata"] = np.array(
                [json.dumps(self.metadata(), sort_keys=True, allow_nan=False)]
            )  # str, not object
            for name, array in arrays.items():
                entry = io.BytesIO()
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), entry.getvalue())
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the baseline (atomically: a run reading it never sees half a file); returns the path."""
        path = Path(path)
        data = self.to_bytes()
        with replaced_whole(path) as partial:
            partial.write_bytes(data)
        self._digest = hashlib.sha256(data).hexdigest()
        return path

    def digest(self) -> str:
        """SHA-256 of the file's content (of the file it was loaded from, else of what ``save`` writes): the tag
        that ties a run's drift check to the baseline it used."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.to_bytes()).hexdigest()
        return self._digest

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read a baseline written by ``save``; anything else is a one-line ``BaselineError`` naming the file."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BaselineError(f"drift baseline {path}: cannot be read ({exc.strerror or exc})") from exc
        try:
            baseline = _parse(data)
        except BaselineError as exc:
            raise BaselineError(f"drift baseline {path}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - zip, npy and JSON parsers each fail their own way on a damaged file
            raise BaselineError(
                f"drift baseline {path}: damaged or not a drift baseline ({type(exc).__name__})"
            ) from exc
        baseline._digest = hashlib.sha256(data).hexdigest()
        return baseline


def _parse(data: bytes) -> Baseline:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if not isinstance(archive, np.lib.npyio.NpzFile) or "metadata" not in archive.files:
            raise BaselineError("not a drift baseline (no metadata)")
        text = archive["metadata"]
        if text.shape != (1,) or text.dtype.kind != "U":
            raise BaselineError("not a drift baseline (its metadata is not one string)")
        meta = json.loads(str(text[0]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BaselineError("not a drift baseline (another format)")
        if meta.get("version") != VERSION:
            raise BaselineError(f"version {meta.get('version')}, this version reads {VERSION}: record it again")
        if meta.get("statistics") != list(STATISTICS):
            raise BaselineError("recorded with other image statistics: record it again")
        missing = [name for name in _ARRAYS if name not in archive.files]
        if missing:
            raise BaselineError(f"damaged: no {', '.join(missing)}")
        arrays = {name: archive[name] for name in _ARRAYS}
    try:
        sample = Sample(
            **arrays,
            classes=[str(c) for c in meta["classes"]],
            thresholds={str(k): float(v) for k, v in meta["thresholds"].items()},
            names=[str(n) for n in meta["names"]],
        )
    except ValueError as exc:
        raise BaselineError(f"damaged: {exc}") from exc
    if sample.images != meta["images"]:
        raise BaselineError(f"damaged: {sample.images} images, the metadata says {meta['images']}")
    return Baseline(
        sample=sample,
        model_sha256=str(meta["model_sha256"]),
        data=str(meta["data"]),
        split=str(meta["split"]),
        created=str(meta["created"]),
        extra=dict(meta.get("extra") or {}),
    )


def rethresholded(sample: Sample, thresholds: dict[str, float], keep: Iterable[str] | None = None) -> Sample:
    """``sample`` (collected at a low score, as calibrate predicts) at the screen's ``thresholds``, of the images
    named in ``keep`` only (default: all): what the screen itself would have collected on them."""
    wanted = None if keep is None else set(keep)
    collector = Collector(thresholds, embedding_sample=max(len(sample.embeddings), 1))
    embedding_of = dict(zip(sample.embedding_image.tolist(), sample.embeddings, strict=True))
    for i, name in enumerate(sample.names):
        if wanted is not None and name not in wanted:
            continue
        mine = sample.detection_image == i
        detections = [
            {"class": sample.classes[c], "score": s}
            for c, s in zip(sample.detection_class[mine], sample.detection_score[mine], strict=True)
        ]
        statistics = ImageStatistics(*sample.statistics[i])
        collector.add(statistics, detections, embedding_of.get(i), name=name)
    return collector.sample()
