"""The steps of a prediction both engines share: decode, letterbox or tile, batch the inputs, merge.

The local engine (`pipeline.inference.engine`) runs them on a pool of threads, the Ray engine
(`pipeline.inference.ray_engine`) inside each actor; both turn a finished `Prepared` image into an
`Outcome` with `outcome_of`, so the files they write are the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.tiles import tile_windows
from pipeline.drift.statistics import ImageStatistics, image_statistics
from pipeline.inference.decode import ImageError, read_image
from pipeline.inference.tiling import merge_tiles

if TYPE_CHECKING:
    from pipeline.inference.model import Detector


class BatchEnd:
    """In a stream of paths: the images so far are all there is for now; run them without waiting for a full batch
    (``predict --watch`` marks each group of images that arrived together)."""


BATCH_END = BatchEnd()


@dataclass
class Outcome:
    """What became of one image: its detections (as written to predictions.jsonl), or why it failed."""

    path: str
    shape: tuple[int, int] = (0, 0)
    detections: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    image: np.ndarray | None = None  # when the engine still has it (annotated images, crops)
    statistics: ImageStatistics | None = None  # its input statistics, when drift is checked
    embedding: np.ndarray | None = None  # the network's pooled backbone features (its tiles' mean), when it gives them


@dataclass(frozen=True)
class Tiling:
    """Whether and how images are cut into tiles before the model sees them."""

    size: int = 0  # 0: whole images
    overlap: float = 0.2
    observe: bool = False  # also measure each image's input statistics (the drift check's), on the decoding threads


@dataclass
class Prepared:
    """One image on its way through: its network inputs (one per tile) and, as batches finish, their detections."""

    path: str
    shape: tuple[int, int] = (0, 0)
    image: np.ndarray | None = None  # kept only when annotated images or crops are asked for
    inputs: list[np.ndarray] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)  # each input's top-left corner in the image
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each input's (height, width) in the image
    error: str = ""
    found: dict[int, np.ndarray] = field(default_factory=dict)  # input index -> (N, 6) in image pixels
    statistics: ImageStatistics | None = None
    embedded: dict[int, np.ndarray] = field(default_factory=dict)  # input index -> pooled backbone features

    @property
    def finished(self) -> bool:
        return bool(self.error) or len(self.found) == len(self.inputs)

    def merged(self, iou: float, max_det: int) -> np.ndarray:
        if len(self.found) == 1:
            return self.found[0]
        tiles = [(x, y, x + w, y + h) for (x, y), (h, w) in zip(self.offsets, self.sizes, strict=True)]
        height, width = self.shape
        return merge_tiles([(self.found[k], tiles[k]) for k in sorted(self.found)], width, height, iou, max_det=max_det)


def prepare(path: str, detector: Detector, keep_image: bool, tiling: Tiling) -> Prepared:
    """One image read and letterboxed (whole, or tile by tile) for ``detector``; an unreadable file: its error."""
    try:
        image = read_image(Path(path))
    except ImageError as exc:
        return Prepared(path, error=str(exc))
    height, width = image.shape[:2]
    grid = tile_windows(width, height, tiling.size, tiling.overlap)  # where the tiled training data is cut too
    inputs = [detector.prepare(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in grid]
    offsets = [(x1, y1) for x1, y1, _, _ in grid]
    sizes = [(y2 - y1, x2 - x1) for x1, y1, x2, y2 in grid]
    statistics = image_statistics(image) if tiling.observe else None
    return Prepared(path, (height, width), image if keep_image else None, inputs, offsets, sizes, statistics=statistics)


def prepare_ahead(
    pool: ThreadPoolExecutor,
    paths: Iterator[str | BatchEnd],
    detector: Detector,
    keep_images: bool,
    tiling: Tiling,
    window: int,
) -> Iterator[Prepared | BatchEnd]:
    """Prepared images in the order of ``paths``, with up to ``window`` being prepared ahead; a `BATCH_END` is
    passed on once every image before it is prepared."""
    ahead: deque[Future[Prepared]] = deque()
    for path in paths:
        if isinstance(path, BatchEnd):
            while ahead:
                yield ahead.popleft().result()
            yield path
            continue
        ahead.append(pool.submit(prepare, path, detector, keep_images, tiling))
        if len(ahead) >= window:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def run_batches(items: Iterator[Prepared | BatchEnd], detector: Detector, size: int) -> Iterator[Prepared]:
    """Every item, finished (its detections found, or its error), in the order given.

    Inputs go to the model in runs of at most ``size`` of one shape (a change of shape closes a
    run), so a batch may hold the tiles of several images, or part of one image's tiles. A `BATCH_END`
    runs what is waiting at once and hands every item back.
    """
    waiting: deque[Prepared] = deque()  # items not yet handed back, in order
    units: list[tuple[Prepared, int]] = []  # (item, input index) for the next model call

    def run() -> None:
        sizes = [unit.sizes[k] for unit, k in units]
        found = detector.detect(np.stack([unit.inputs[k] for unit, k in units]), sizes)
        embedded = getattr(detector, "last_embeddings", None)  # (B, D), or None: a network without them
        for i, ((unit, k), boxes) in enumerate(zip(units, found, strict=True)):
            x, y = unit.offsets[k]
            boxes[:, [0, 2]] += x
            boxes[:, [1, 3]] += y
            unit.found[k] = boxes
            if embedded is not None:
                unit.embedded[k] = embedded[i]
        units.clear()

    for item in items:
        if isinstance(item, BatchEnd):
            if units:
                run()
            while waiting:
                yield _release(waiting.popleft())
            continue
        waiting.append(item)
        for k, network_input in enumerate(item.inputs):
            if units and (len(units) == size or network_input.shape != units[0][0].inputs[units[0][1]].shape):
                run()
            units.append((item, k))
        while waiting and waiting[0].finished:
            yield _release(waiting.popleft())
    if units:
        run()
    while waiting:
        yield _release(waiting.popleft())


def outcome_of(item: Prepared, detector: Detector) -> Outcome:
    """A finished item's detections (its tiles merged with the detector's IoU and max_det), or its error."""
    if item.error:
        return Outcome(item.path, error=item.error)
    found = item.merged(detector.iou, detector.max_det)
    embedding = np.mean([item.embedded[k] for k in sorted(item.embedded)], axis=0) if item.embedded else None
    return Outcome(
        item.path,
        item.shape,
        _detections(found, detector.names),
        image=item.image,
        statistics=item.statistics,
        embedding=embedding,
    )


def _release(item: Prepared) -> Prepared:
    item.inputs.clear()  # the network inputs are done with; the item goes on to be written
    return item


def _detections(boxes: np.ndarray, names: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "class_id": int(c),
            "class": names[int(c)],
            "score": round(float(s), 6),
            "box": [round(float(v), 3) for v in (x1, y1, x2, y2)],
        }
        for x1, y1, x2, y2, s, c in boxes
    ]
