"""What a screening run saw, per image: cheap input statistics, the detections at the screen's thresholds, and
(when the caller has them) pooled backbone embeddings, collected into a ``Sample`` that a baseline or a run's
drift check is made of.

The statistics are the ones a changed line moves first: a new lamp or exposure moves brightness and contrast, a
dirty lens or a focus change moves sharpness, a new camera or white balance moves the colour balance and the size.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.25  # a class the thresholds do not name, when they name no "default" either (as predict does)
EMBEDDING_SAMPLE = 500  # embeddings kept per sample: the MMD test's cost grows with the square of the count


@dataclass(frozen=True)
class ImageStatistics:
    """One image's input statistics, in a fixed order (``STATISTICS``) so that a sample is one float array.

    ``red_green`` and ``blue_green`` are the log ratios of the channel means, ``log((R+1)/(G+1))``: 0 for a grey
    image (so grey and colour parts are measured alike), unchanged by a global gain (a brighter lamp moves
    brightness, not balance), moved by a white-balance or colour cast. The +1 keeps near-black images finite.
    """

    brightness: float  # mean luma (ITU-R BT.601, as OpenCV's BGR2GRAY), 0-255
    contrast: float  # standard deviation of luma
    sharpness: float  # variance of the Laplacian of luma: falls with blur, defocus or a dirty lens
    red_green: float
    blue_green: float
    width: float
    height: float

    def values(self) -> tuple[float, ...]:
        return astuple(self)


STATISTICS: tuple[str, ...] = tuple(f.name for f in fields(ImageStatistics))


def image_statistics(image: np.ndarray) -> ImageStatistics:
    """The statistics of one decoded image: BGR uint8 (H, W, 3), or grey (H, W). A few milliseconds per
    megapixel; OpenCV releases the GIL, so decoding threads can call it in parallel."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        luma = image.reshape(image.shape[:2])
        blue = green = red = float(cv2.mean(luma)[0])
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        blue, green, red = cv2.mean(image[..., :3])[:3]
        luma = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    else:
        raise ValueError(f"expected a BGR (H, W, 3) or grey (H, W) image, got shape {image.shape}")
    mean, std = cv2.meanStdDev(luma)
    laplacian = cv2.Laplacian(luma, cv2.CV_32F)
    _, lap_std = cv2.meanStdDev(laplacian)
    return ImageStatistics(
        brightness=float(mean[0, 0]),
        contrast=float(std[0, 0]),
        sharpness=float(lap_std[0, 0]) ** 2,
        red_green=float(np.log((red + 1.0) / (green + 1.0))),
        blue_green=float(np.log((blue + 1.0) / (green + 1.0))),
        width=float(luma.shape[1]),
        height=float(luma.shape[0]),
    )


def threshold_of(thresholds: Mapping[str, float], name: str) -> float:
    """The screen's threshold for class ``name``: its own, else ``default``."""
    return float(thresholds.get(name, thresholds.get("default", DEFAULT_THRESHOLD)))


@dataclass
class Sample:
    """The images of one run (or of the calibration split): what ``compare`` needs of either side.

    ``statistics`` is (images, len(STATISTICS)); each detection at or above its class's threshold is one entry of
    ``detection_image`` / ``detection_class`` (an index into ``classes``) / ``detection_score``; ``embeddings``
    is a seeded sample of at most ``EMBEDDING_SAMPLE`` rows, ``embedding_image`` the images they belong to.
    """

    statistics: np.ndarray
    classes: list[str]
    detection_image: np.ndarray
    detection_class: np.ndarray
    detection_score: np.ndarray
    embeddings: np.ndarray
    embedding_image: np.ndarray
    thresholds: dict[str, float] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.statistics = np.asarray(self.statistics, dtype=np.float64).reshape(-1, len(STATISTICS))
        self.detection_image = np.asarray(self.detection_image, dtype=np.int64).reshape(-1)
        self.detection_class = np.asarray(self.detection_class, dtype=np.int64).reshape(-1)
        self.detection_score = np.asarray(self.detection_score, dtype=np.float64).reshape(-1)
        embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.embeddings = embeddings.reshape(len(embeddings), -1) if embeddings.size else np.zeros((0, 0), np.float32)
        self.embedding_image = np.asarray(self.embedding_image, dtype=np.int64).reshape(-1)
        if not self.names:
            self.names = [str(i) for i in range(self.images)]
        n = self.images
        if len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")
        if not len(self.detection_image) == len(self.detection_class) == len(self.detection_score):
            raise ValueError("detection arrays of different lengths")
        if len(self.detection_image) and (self.detection_image.min() < 0 or self.detection_image.max() >= n):
            raise ValueError("a detection of an image the sample does not hold")
        if len(self.detection_class) and (
            self.detection_class.min() < 0 or self.detection_class.max() >= len(self.classes)
        ):
            raise ValueError("a detection of a class the sample does not name")
        if len(self.embedding_image) != len(self.embeddings):
            raise ValueError(f"{len(self.embedding_image)} embedding images for {len(self.embeddings)} embeddings")
        if len(self.embedding_image) and (self.embedding_image.min() < 0 or self.embedding_image.max() >= n):
            raise ValueError("an embedding of an image the sample does not hold")

    @property
    def images(self) -> int:
        return len(self.statistics)

    def statistic(self, name: str) -> np.ndarray:
        """One statistic of every image."""
        return self.statistics[:, STATISTICS.index(name)]

    def flags(self, name: str) -> np.ndarray:
        """Per image: has it a detection of class ``name`` at or above the threshold (the screen fails it)?"""
        flagged = np.zeros(self.images, dtype=bool)
        if name in self.classes:
            flagged[self.detection_image[self.detection_class == self.classes.index(name)]] = True
        return flagged

    def scores(self, name: str) -> np.ndarray:
        """The scores of class ``name``'s detections at or above its threshold."""
        if name not in self.classes:
            return np.zeros(0)
        return self.detection_score[self.detection_class == self.classes.index(name)]

    def top_scores(self, name: str) -> np.ndarray:
        """Per image with a detection of class ``name`` at or above its threshold, the highest such score: one value
        per image, so that a test of them treats images, not the many detections of one part, as the draws."""
        if name not in self.classes:
            return np.zeros(0)
        mine = self.detection_class == self.classes.index(name)
        images, scores = self.detection_image[mine], self.detection_score[mine]
        top = np.full(self.images, -np.inf)
        np.maximum.at(top, images, scores)
        return top[np.isfinite(top)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Sample:
        """The images at ``indices`` (in that order; an index given twice gives the image twice), with their
        detections and those of the embeddings that belong to them, renumbered from 0; names, classes and
        thresholds kept. Draws folders from one predicted pool without running the network again."""
        positions = np.asarray(indices)
        if positions.dtype == bool:  # a mask over the images
            if positions.shape != (self.images,):
                raise ValueError(f"a mask of {positions.size} values for {self.images} images")
            positions = np.flatnonzero(positions)
        if positions.size == 0:
            positions = np.zeros(0, np.int64)  # ``[]`` is a float array
        elif positions.dtype.kind not in "iu":
            raise TypeError(f"image indices are integers, got {positions.dtype}")
        positions = positions.astype(np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.images):
            raise ValueError(f"an index outside the sample's {self.images} images")
        detections, detection_image = _gather(self.detection_image, positions)
        rows, embedding_image = _gather(self.embedding_image, positions)
        dim = self.embeddings.shape[1] if self.embeddings.ndim == 2 else 0
        return Sample(
            statistics=self.statistics[positions],
            classes=list(self.classes),
            detection_image=detection_image,
            detection_class=self.detection_class[detections],
            detection_score=self.detection_score[detections],
            embeddings=self.embeddings[rows] if len(rows) else np.zeros((0, dim), np.float32),
            embedding_image=embedding_image,
            thresholds=dict(self.thresholds),
            names=[self.names[i] for i in positions],
        )

    @classmethod
    def concat(cls, samples: Iterable[Sample]) -> Sample:
        """One sample of the images of ``samples``, one after the other: classes merged by name (in the order they
        first appear), image numbers offset. The embeddings must have one length and the thresholds (where a
        sample has them) must agree: detections kept at other thresholds would not compare."""
        samples = list(samples)
        classes: list[str] = list(dict.fromkeys(name for sample in samples for name in sample.classes))
        dims = {sample.embeddings.shape[1] for sample in samples if len(sample.embeddings)}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different lengths: {sorted(dims)}")
        screens = [sample.thresholds for sample in samples if sample.thresholds]
        if any(screen != screens[0] for screen in screens):
            raise ValueError("samples kept at different thresholds")
        offsets = np.cumsum([0] + [sample.images for sample in samples])
        dim = dims.pop() if dims else 0
        with_embeddings = [sample for sample in samples if len(sample.embeddings)]
        return cls(
            statistics=np.vstack([s.statistics for s in samples]) if samples else np.zeros((0, len(STATISTICS))),
            classes=classes,
            detection_image=np.concatenate(
                [s.detection_image + offset for s, offset in zip(samples, offsets)] or [np.zeros(0, np.int64)]
            ),
            detection_class=np.concatenate(
                [np.array([classes.index(c) for c in s.classes], np.int64)[s.detection_class] for s in samples]
                or [np.zeros(0, np.int64)]
            ),
            detection_score=np.concatenate([s.detection_score for s in samples] or [np.zeros(0)]),
            embeddings=np.vstack([s.embeddings for s in with_embeddings])
            if with_embeddings
            else np.zeros((0, dim), np.float32),
            embedding_image=np.concatenate(
                [s.embedding_image + offset for s, offset in zip(samples, offsets)] or [np.zeros(0, np.int64)]
            ),
            thresholds=dict(screens[0]) if screens else {},
            names=[name for s in samples for name in s.names],
        )


def _gather(image_of: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``image_of`` (each row's image) whose image is among ``positions``, grouped by position in
    ``positions``' order (within one image in their own order), and each one's new image number."""
    order = np.argsort(image_of, kind="stable")
    ordered = image_of[order]
    starts = np.searchsorted(ordered, positions, side="left")
    counts = np.searchsorted(ordered, positions, side="right") - starts
    new_image = np.repeat(np.arange(len(positions), dtype=np.int64), counts)
    # each row's place in ``ordered``: its image's start plus its rank within the image
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[np.repeat(starts, counts) + within], new_image


class Collector:
    """Accumulates a run's images into a ``Sample``: one ``add`` per screened image, a few microseconds each.

    ``window``: keep only the last ``window`` images (``predict --watch``'s rolling window); else every image's
    statistics and detections, and a seeded reservoir sample of ``embedding_sample`` embeddings (so memory stays
    bounded on a long run and the sample is uniform over it). Thread-safe.
    """

    def __init__(
        self,
        thresholds: Mapping[str, float],
        *,
        embedding_sample: int = EMBEDDING_SAMPLE,
        window: int | None = None,
        seed: int = 0,
    ) -> None:
        self.thresholds = {str(k): float(v) for k, v in thresholds.items()}
        self.embedding_sample = int(embedding_sample)
        self.window = window
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._classes: list[str] = [name for name in self.thresholds if name != "default"]
        # (name, statistics, ((class index, score), ...), embedding when windowed)
        self._records: deque[tuple[str, tuple[float, ...], tuple[tuple[int, float], ...], np.ndarray | None]]
        self._records = deque(maxlen=window)
        self._reservoir: list[tuple[int, np.ndarray]] = []  # (image index, embedding), without a window
        self._embeddings_seen = 0
        self._added = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def add(
        self,
        statistics: ImageStatistics,
        detections: Iterable[Mapping[str, Any]] = (),
        embedding: Sequence[float] | np.ndarray | None = None,
        name: str | None = None,
    ) -> None:
        """One screened image: its statistics, its detections (``{"class": name, "score": s}``; those below their
        class's threshold are dropped here) and, optionally, its embedding."""
        vector = (
            None if embedding is None else np.array(embedding, dtype=np.float32).reshape(-1)
        )  # a copy: buffers get reused
        with self._lock:
            kept = []
            for detection in detections:
                cls, score = str(detection["class"]), float(detection["score"])
                if score >= threshold_of(self.thresholds, cls):
                    if cls not in self._classes:
                        self._classes.append(cls)
                    kept.append((self._classes.index(cls), score))
            label = name if name is not None else str(self._added)  # images are numbered from 0 unless named
            self._records.append((label, statistics.values(), tuple(kept), vector if self.window is not None else None))
            if vector is not None and self.window is None:
                self._reserve(len(self._records) - 1, vector)  # without a window no record is dropped
            self._added += 1

    def _reserve(self, index: int, vector: np.ndarray) -> None:
        """Reservoir sampling (Vitter's algorithm R): every embedding seen has the same chance to be kept."""
        seen = self._embeddings_seen
        self._embeddings_seen += 1
        if len(self._reservoir) < self.embedding_sample:
            self._reservoir.append((index, vector))
            return
        slot = int(self._rng.integers(0, seen + 1))
        if slot < self.embedding_sample:
            self._reservoir[slot] = (index, vector)

    def sample(self) -> Sample:
        """A snapshot of what was collected (the collector goes on collecting)."""
        with self._lock:
            records = list(self._records)
            if self.window is None:
                pairs = sorted(self._reservoir, key=lambda pair: pair[0])
            else:
                pairs = [(i, r[3]) for i, r in enumerate(records) if r[3] is not None]
                if len(pairs) > self.embedding_sample:
                    keep = np.random.default_rng(self.seed).choice(len(pairs), self.embedding_sample, replace=False)
                    pairs = [pairs[i] for i in sorted(keep)]
            classes = list(self._classes)
        detections = [(i, cls, score) for i, r in enumerate(records) for cls, score in r[2]]
        dims = {len(vector) for _, vector in pairs}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different lengths: {sorted(dims)}")
        return Sample(
            statistics=np.array([r[1] for r in records], dtype=np.float64).reshape(-1, len(STATISTICS)),
            classes=classes,
            detection_image=np.array([d[0] for d in detections], dtype=np.int64),
            detection_class=np.array([d[1] for d in detections], dtype=np.int64),
            detection_score=np.array([d[2] for d in detections], dtype=np.float64),
            embeddings=np.stack([v for _, v in pairs]) if pairs else np.zeros((0, 0), np.float32),
            embedding_image=np.array([i for i, _ in pairs], dtype=np.int64),
            thresholds=dict(self.thresholds),
            names=[r[0] for r in records],
        )
