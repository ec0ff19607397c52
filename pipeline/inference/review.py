"""A review queue: images for a person to look at again, as Label Studio import tasks with the model's boxes.

`predict --review DIR` picks the uncertain images of a prediction (a class's top score within ``band``
of that class's threshold: the verdicts a small change of score would flip), most uncertain first;
`evaluate --review DIR` (`pipeline.evaluation.review`) the images with missed defects and false alarms.
Both write the same folder: ``tasks.json`` (Label Studio's JSON import format), ``label_config.xml``
(the labelling interface the tasks fit), ``review.csv`` and the images under ``images/``, hard-linked
(copied across file systems) under unique names. The tasks refer to them as
``/data/local-files/?d=images/<name>``, which Label Studio's local-file storage rooted at DIR serves.
DIR is this tool's (a marker says so) and is replaced whole, only once the new queue is complete.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.labelstudio import LabeledBox, label_config, task, write_tasks
from pipeline.destinations import DestinationError, build_then_swap, check_replaceable
from pipeline.inference.discover import printable

KIND = "review"  # the marker's kind: a review queue, from predict or evaluate (either may replace it)
TASKS, CONFIG, TABLE, IMAGES = "tasks.json", "label_config.xml", "review.csv", "images"
URL_PREFIX = "/data/local-files/?d="  # Label Studio's local-file storage, relative to its document root
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TOLERANCE = 1e-9  # scores are rounded to 6 digits; 0.45 - 0.35 is 0.10000000000000003 in floats


@dataclass(frozen=True)
class QueueItem:
    """One image of a review queue: where it is, its size, the boxes its task shows and what it says about it."""

    path: str
    width: int
    height: int
    predictions: list[LabeledBox]
    truth: list[LabeledBox] | None = None  # ground truth, when there is any (evaluate): the task's annotation
    meta: dict[str, Any] = field(default_factory=dict)  # extra task data: why the image is in the queue


@dataclass
class Queue:
    """What a review queue holds once written: the images' names under images/ (by path) and any left out."""

    folder: Path
    names: dict[str, str] = field(default_factory=dict)  # image path -> its name under images/
    missing: list[str] = field(default_factory=list)  # images that could not be linked or copied (with the reason)

    @property
    def images(self) -> int:
        return len(self.names)


def check_queue(folder: str | Path, option: str = "--review", *, others: Sequence[tuple[str, Path]] = ()) -> Path:
    """``folder`` resolved, if a review queue may be written there; ``others``: (what, path) folders it must stay
    out of (the results folder, the source folder), as a review copied into the source is predicted next time."""
    target = check_replaceable(folder, KIND, option)
    for what, other in others:
        other = Path(other).resolve()
        if target == other or other in target.parents or target in other.parents:
            raise DestinationError(f"{option} {folder}: overlaps {what} {printable(other)}; choose another {option}")
    return target


# ---- predict --review: the uncertain images ----------------------------------------------------------------


@dataclass(frozen=True)
class Uncertain:
    """An image whose top score of one or more classes lies within the band around the class's threshold."""

    path: str
    width: int
    height: int
    classes: list[tuple[str, float, float]]  # (class, top score, threshold), closest to its threshold first
    detections: list[dict[str, Any]]

    @property
    def distance(self) -> float:
        return min(abs(score - threshold) for _, score, threshold in self.classes)


def uncertain_images(
    records: Iterable[dict[str, Any]], threshold: Callable[[str], float], band: float
) -> list[Uncertain]:
    """The records (predict's log lines) with a class's top score within ``band`` of ``threshold(class)``, most
    uncertain first (the smallest distance; ties by path). A class with no detection in the image has no score."""
    found = []
    for record in records:
        top: dict[str, float] = {}
        for d in record["detections"]:
            top[d["class"]] = max(top.get(d["class"], 0.0), d["score"])
        close = [(name, score, threshold(name)) for name, score in top.items()]
        close = [c for c in close if abs(c[1] - c[2]) <= band + _TOLERANCE]
        if close:
            close.sort(key=lambda c: (abs(c[1] - c[2]), c[0]))
            found.append(Uncertain(record["path"], record["width"], record["height"], close, record["detections"]))
    found.sort(key=lambda u: (u.distance, u.path))
    return found


def boxes_of(detections: Iterable[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[LabeledBox]:
    """Predict's detections (``class``, ``score``, ``box`` corners in pixels) as Label Studio boxes, those kept."""
    return [LabeledBox(d["class"], *d["box"], score=d["score"]) for d in detections if keep(d)]


def write_uncertain(
    folder: str | Path,
    records: Iterable[dict[str, Any]],
    threshold: Callable[[str], float],
    band: float,
    classes: list[str],
    model: str,
    atypical: Sequence[tuple[str, str]] = (),
) -> tuple[Queue, list[Uncertain]]:
    """The review queue of a prediction: its uncertain images, their boxes down to the band's lower edge
    (what the model saw or nearly saw), ``review.csv`` with one row per uncertain class of an image. ``atypical``:
    (path, why) of the images that drive a drift, most atypical first: they come first, with the boxes that failed
    them (a row each, class ``drift``), so a person sees what the line now shows before the borderline scores."""
    wanted = {path for path, _ in atypical}
    by_path: dict[str, dict[str, Any]] = {}  # the atypical images' records, kept as the log streams past

    def keeping(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if record["path"] in wanted:
                by_path[record["path"]] = record
            yield record

    chosen = uncertain_images(keeping(records), threshold, band)
    unlike = [(path, why) for path, why in atypical if path in by_path]
    items = [
        QueueItem(
            path,
            by_path[path]["width"],
            by_path[path]["height"],
            boxes_of(by_path[path]["detections"], lambda d: d["score"] >= threshold(d["class"]) - _TOLERANCE),
            meta={"source": printable(path), "atypical": why},
        )
        for path, why in unlike
    ]
    items += [
        QueueItem(
            u.path,
            u.width,
            u.height,
            boxes_of(u.detections, lambda d: d["score"] >= threshold(d["class"]) - band - _TOLERANCE),
            meta={"source": printable(u.path), "uncertain": ", ".join(f"{c} {s:.3f} ~ {t:g}" for c, s, t in u.classes)},
        )
        for u in chosen
    ]

    def table(staging: Path, queue: Queue) -> None:
        with open(staging / TABLE, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "class", "score", "threshold", "distance", "file"])
            for path, why in unlike:
                if path in queue.names:
                    writer.writerow([printable(path), "drift", "", "", why, f"{IMAGES}/{queue.names[path]}"])
            for u in chosen:
                if u.path in queue.names:
                    for name, score, limit in u.classes:
                        row = [printable(u.path), name, f"{score:.4f}", f"{limit:g}", f"{abs(score - limit):.4f}"]
                        writer.writerow([*row, f"{IMAGES}/{queue.names[u.path]}"])

    queue = write_queue(folder, items, classes, model, extra=table, info={"model": model, "band": band})
    return queue, chosen


# ---- the folder, shared with evaluate --review -----------------------------------------------------------------


def image_url(name: str) -> str:
    """How a task names an image under DIR/images/ (names are made URL-safe by `unique_name`)."""
    return f"{URL_PREFIX}{IMAGES}/{name}"


def unique_name(path: str, taken: set[str]) -> str:
    """A safe file name for ``path`` under images/ that none of ``taken`` (case-folded) has: ``a.png``, ``a-2.png``."""
    source = Path(path)
    stem = _UNSAFE.sub("_", source.stem).strip("._-") or "image"
    suffix = _UNSAFE.sub("_", source.suffix.lower())
    name, k = f"{stem}{suffix}", 1
    while name.casefold() in taken:
        k += 1
        name = f"{stem}-{k}{suffix}"
    taken.add(name.casefold())
    return name


def _place(source: str, target: Path) -> None:
    """The image at ``target``: a hard link (no bytes copied) where the file systems allow, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def clipped(box: LabeledBox, width: int, height: int) -> LabeledBox | None:
    """The box within the image (Label Studio's percentages must stay in 0..100); None when nothing is left."""
    x1, y1 = min(max(box.x1, 0.0), width), min(max(box.y1, 0.0), height)
    x2, y2 = min(max(box.x2, 0.0), width), min(max(box.y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return LabeledBox(box.label, x1, y1, x2, y2, box.score)


def _inside(boxes: list[LabeledBox], width: int, height: int) -> list[LabeledBox]:
    return [b for b in (clipped(box, width, height) for box in boxes) if b is not None]


def write_queue(
    folder: str | Path,
    items: Sequence[QueueItem],
    classes: list[str],
    model: str,
    *,
    extra: Callable[[Path, Queue], None] | None = None,
    info: dict[str, Any] | None = None,
) -> Queue:
    """Build the queue beside ``folder`` and swap it in: the images, ``tasks.json`` (in ``items``' order),
    ``label_config.xml``, then whatever ``extra(staging, queue)`` adds (the review table, crops)."""
    target = Path(folder)
    queue = Queue(check_replaceable(target, KIND, "--review"))
    with build_then_swap(target, KIND, "--review", **(info or {})) as staging:
        (staging / IMAGES).mkdir()
        taken: set[str] = set()
        tasks = []
        for item in items:
            if item.path in queue.names:  # the same image twice: one task
                continue
            name = unique_name(item.path, taken)
            try:
                _place(item.path, staging / IMAGES / name)
            except OSError as exc:  # moved or deleted since it was predicted: named in the report, the rest go on
                queue.missing.append(f"{printable(item.path)}: {exc.strerror or exc}")
                continue
            queue.names[item.path] = name
            truth = _inside(item.truth, item.width, item.height) if item.truth is not None else None
            predictions = _inside(item.predictions, item.width, item.height)
            tasks.append(
                task(
                    image_url(name),
                    item.width,
                    item.height,
                    truth=truth,
                    predictions=predictions,
                    model_version=model,
                    meta=item.meta,
                )
            )
        write_tasks(staging / TASKS, tasks)
        (staging / CONFIG).write_text(label_config(classes), encoding="utf-8")
        if extra is not None:
            extra(staging, queue)
    return queue
