"""Label Studio's JSON: task files to import (images with the model's boxes as pre-annotations beside the
ground truth), and exports of reviewed tasks read back into the in-memory dataset form.

Label Studio keeps a rectangle as a ``rectanglelabels`` result whose ``value`` holds ``x``, ``y``,
``width`` and ``height`` in percent of the image and ``original_width``/``original_height`` in pixels
(https://labelstud.io/guide/predictions, https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks).
The labelling config these tasks fit is `label_config` (a ``RectangleLabels`` named ``label`` on an
``Image`` named ``image``).

Reading an export (`read_labelstudio`), one task is one image:

- Its boxes come from the latest annotation that was not cancelled (``updated_at``, else ``created_at``,
  else the later in the list); a note says so when there were several. A task without one is skipped and
  named; an annotation without boxes makes a background image (labelled, no boxes).
- ``data.image`` is found as: a path relative to the export's folder; ``/data/local-files/?d=PATH`` with
  PATH relative to the export's folder or to ``images`` (an absolute PATH is used as written: the user
  served those files to Label Studio); ``/data/upload/<project>/<8 hex>-<name>`` and http(s) URLs by file
  name in ``images``. With ``images``, any reference is also matched by its file name anywhere under that
  folder (walked once); a name two files there share is reported, not guessed. A relative reference never
  leads outside the export's folder or ``images`` (``../`` is refused, as in `pipeline.data.coco`).
- Percent coordinates are scaled by the image file's size, which is ``original_width`` x
  ``original_height`` in a consistent export (a note says when those are missing or differ). A rotated
  rectangle (``rotation`` degrees clockwise about its top-left corner) becomes its axis-aligned bounding
  box, with a note; boxes are clipped to the image.
- Class order: ``names`` (``--classes``) when given, and boxes of other labels are dropped and named;
  otherwise the labels found, sorted by name (an export does not carry the labelling config, and sorted
  names are reproducible whatever order the tasks come in), as for Pascal VOC.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.data.annotations import DROPPED_BOX, NOTE, SKIPPED_IMAGE, Box, Collection, Problem, Sample
from pipeline.data.coco import _inside, _is_number
from pipeline.data.dataset import IMAGE_SUFFIXES, DatasetError, read_text
from pipeline.data.images import inspect_images
from pipeline.data.validate import TOLERANCE_PX

FROM_NAME, TO_NAME = "label", "image"


@dataclass(frozen=True)
class LabeledBox:
    """A box in image pixels (corners), its class name and, for a model's box, its score."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None


def label_config(classes: list[str]) -> str:
    """The labelling interface (Label Studio's XML) the task files are written for."""
    labels = "\n".join(f'    <Label value="{name}"/>' for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n'
        "</View>\n"
    )


def box_result(box: LabeledBox, width: int, height: int, index: int) -> dict[str, Any]:
    """One ``rectanglelabels`` result: percent coordinates of an image of ``width`` x ``height`` px."""
    result: dict[str, Any] = {
        "id": f"r{index}",
        "type": "rectanglelabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * box.x1 / width,
            "y": 100.0 * box.y1 / height,
            "width": 100.0 * (box.x2 - box.x1) / width,
            "height": 100.0 * (box.y2 - box.y1) / height,
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
    }
    if box.score is not None:
        result["score"] = float(box.score)
    return result


def task(
    image: str,
    width: int,
    height: int,
    *,
    truth: list[LabeledBox] | None = None,
    predictions: list[LabeledBox] | None = None,
    model_version: str = "",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A task of Label Studio's import format: ``data.image`` (a URL or ``/data/local-files/?d=...``), the
    ground truth as an annotation and the model's boxes as a prediction (pre-annotation)."""
    record: dict[str, Any] = {"data": {"image": image, **(meta or {})}}
    if truth is not None:
        record["annotations"] = [{"result": [box_result(b, width, height, i) for i, b in enumerate(truth)]}]
    if predictions is not None:
        scores = [b.score for b in predictions if b.score is not None]
        record["predictions"] = [
            {
                "model_version": model_version,
                "score": float(min(scores)) if scores else 0.0,
                "result": [box_result(b, width, height, i) for i, b in enumerate(predictions)],
            }
        ]
    return record


def write_tasks(path: str | Path, tasks: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
    return path


# ---- reading an export ---------------------------------------------------------------------------

LOCAL_FILES = "/data/local-files/"  # Label Studio serves local storage as /data/local-files/?d=<path>
UPLOAD = "/data/upload/"  # files uploaded into Label Studio: /data/upload/<project>/<8 hex>-<name>
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


class ImageFolder:
    """``--images``: every image file under a folder by file name, from one walk (each real folder once:
    symlinked folders are not followed)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetError(f"--images {root}: no such folder")
        self.by_name: dict[str, list[Path]] = {}
        for folder, subfolders, files in os.walk(self.root):
            subfolders.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    self.by_name.setdefault(name, []).append(Path(folder) / name)

    def match(self, names: list[str]) -> Path | str | None:
        """The one file with the first of ``names`` found here; why not when two share it; None: no such file."""
        for name in names:
            found = self.by_name.get(name, [])
            if len(found) == 1:
                return found[0]
            if found:
                listed = ", ".join(str(p.relative_to(self.root)) for p in found[:3])
                return f"{len(found)} files under {self.root} are named {name} ({listed}): not guessed"
        return None


@dataclass(frozen=True)
class _Reference:
    """What a ``data.image`` value says: the paths to try (none for uploads and URLs), the file names it may be
    matched by, and whether an absolute path is used as written."""

    kind: str  # "a path", "a local file", "an upload", "a URL"
    paths: list[str]
    names: list[str]
    absolute_allowed: bool = False


def parse_reference(reference: str) -> _Reference:
    """Split a task's image reference into the paths it gives and the file names it may be matched by."""
    url = urlsplit(reference)
    if url.scheme and url.netloc:  # http(s), s3, gs ...: only the file name can be matched locally
        return _Reference("a URL", [], [unquote(os.path.basename(url.path))])
    if not url.scheme and url.path.rstrip("/") == LOCAL_FILES.rstrip("/"):
        # Label Studio percent-encodes ``d``; a writer that did not (names with + or &) is read as written too.
        decoded = parse_qs(url.query).get("d", [""])[0]
        paths = list(dict.fromkeys(p for p in (decoded, url.query.removeprefix("d=")) if p))
        return _Reference("a local file", paths, [os.path.basename(p) for p in paths], absolute_allowed=True)
    if not url.scheme and url.path.startswith(UPLOAD):
        name = unquote(os.path.basename(url.path))
        return _Reference("an upload", [], list(dict.fromkeys([name, _UPLOAD_PREFIX.sub("", name)])))
    return _Reference("a path", [reference], [os.path.basename(reference)])


def find_task_image(reference: str, export_dir: Path, images: ImageFolder | None) -> Path | str:
    """The image file a task's ``data.image`` names, or why there is none (see the module's docstring)."""
    ref = parse_reference(reference)
    bases = [export_dir, *([images.root] if images else [])]
    refused = False
    for path in ref.paths:
        if ref.absolute_allowed and Path(path).is_absolute():
            if (candidate := Path(os.path.normpath(path))).is_file():
                return candidate
            continue
        candidates = [Path(os.path.normpath(base / path)) for base in bases]  # an absolute path stays as it is
        allowed = [c for c, base in zip(candidates, bases) if _inside(c, base)]
        refused = refused or not allowed
        if found := next((c for c in allowed if c.is_file()), None):
            return found
    if images and (found := images.match([n for n in ref.names if n])):
        return found
    where = " or ".join(str(b) for b in bases)
    if refused:
        return f"points outside {where}; refused"
    name = ref.names[-1] if ref.names else ""
    if not ref.paths and images is None:
        return f"not found: {ref.kind} reference is matched by its file name ({name}) in --images DIR"
    return f"not found (looked under {where}{f' for a file named {name}' if images else ''})"


@dataclass
class _Rect:
    """One rectangle result, before the image's size is known."""

    ref: str
    label: str
    x: float
    y: float
    width: float
    height: float
    rotation: float
    original: tuple[float, float] | None


@dataclass
class _Task:
    ref: str
    sample: Sample
    rects: list[_Rect] = field(default_factory=list)


def _load(export: Path) -> list[Any]:
    try:
        data = json.loads(read_text(export))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{export}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"{export}: unreadable JSON ({str(exc)[:80]})") from None
    if isinstance(data, dict) and "data" in data:  # one task, as Label Studio also imports
        data = [data]
    if not isinstance(data, list):
        raise DatasetError(f"{export}: not a Label Studio JSON export (expected a list of tasks)")
    return data


def _shown(reference: str, limit: int = 160) -> str:
    """A reference for a message: a data: URI or a signed URL can be thousands of characters long."""
    return reference if len(reference) <= limit else f"{reference[: limit - 3]}..."


def _task_name(task: dict[str, Any], index: int) -> str:
    task_id = task.get("id")
    return (
        f"task {task_id}"
        if isinstance(task_id, (int, str)) and not isinstance(task_id, bool)
        else f"task at index {index}"
    )


def _when(annotation: dict[str, Any]) -> datetime:
    """When an annotation was last changed (Label Studio writes ISO 8601 times); the epoch when unknown."""
    for key in ("updated_at", "created_at"):
        try:
            moment = datetime.fromisoformat(str(annotation[key]))
        except (KeyError, ValueError):
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return _EPOCH


def _annotation(task: dict[str, Any], name: str, export: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The latest annotation not cancelled, or None and why the task's image is skipped."""
    annotations = task.get("annotations", task.get("completions"))  # "completions": exports before 1.0
    image = _shown(task["data"]["image"])
    if not isinstance(annotations, list) or not annotations:
        return None, [Problem(export, f"{name}: image {image}: no annotation (not reviewed yet)", SKIPPED_IMAGE)]
    kept = [(i, a) for i, a in enumerate(annotations) if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        reason = f"{name}: image {image}: every annotation ({len(annotations)}) was cancelled or malformed"
        return None, [Problem(export, reason, SKIPPED_IMAGE)]
    index, chosen = max(kept, key=lambda pair: (_when(pair[1]), pair[0]))
    if len(kept) == 1:
        return chosen, []
    which = f"id {chosen['id']}" if "id" in chosen else f"at index {index}"
    reason = f"{name}: {len(kept)} annotations not cancelled; the latest ({which}) is used"
    return chosen, [Problem(export, reason, NOTE)]


def _rects(annotation: dict[str, Any], name: str, export: Path) -> tuple[list[_Rect], list[Problem]]:
    """The annotation's rectangles, one per label; every other result is named as dropped or ignored."""
    results = annotation.get("result")
    if not isinstance(results, list):
        return [], [Problem(export, f"{name}: the annotation's result is not a list; no boxes read", DROPPED_BOX)]
    rects: list[_Rect] = []
    problems: list[Problem] = []
    ignored: dict[str, int] = {}
    for k, result in enumerate(results):
        ref = f"{name} result {str(result.get('id', f'at index {k}'))[:40] if isinstance(result, dict) else k}"
        kind = result.get("type") if isinstance(result, dict) else None
        if kind not in ("rectanglelabels", "rectangle"):
            if isinstance(kind, str) and kind.endswith("labels"):  # polygons, keypoints, brushes: regions lost
                problems.append(Problem(export, f"{ref}: a {kind} region is not a rectangle", DROPPED_BOX))
            else:
                key = kind if isinstance(kind, str) else "malformed"
                ignored[key] = ignored.get(key, 0) + 1
            continue
        found, problem = _rect(result, ref)
        if problem:
            problems.append(Problem(export, problem, NOTE if found else DROPPED_BOX))
        rects += found
    if ignored:
        kinds = ", ".join(f"{n} {kind}" for kind, n in ignored.items())
        problems.append(Problem(export, f"{name}: results ignored (not regions): {kinds}", NOTE))
    return rects, problems


def _rect(result: dict[str, Any], ref: str) -> tuple[list[_Rect], str]:
    """A result's rectangles (one per label) and a problem: why it is dropped (no rectangles), or a note."""
    value = result.get("value")
    if not isinstance(value, dict):
        return [], f"{ref}: no value"
    numbers = [value.get(key) for key in ("x", "y", "width", "height")]
    if not all(_is_number(v) for v in numbers):
        return [], f"{ref}: x, y, width and height must be finite numbers, got {json.dumps(numbers)[:60]}"
    if _is_number(result.get("image_rotation")) and result["image_rotation"] % 360:
        return (
            [],
            f"{ref}: the image was rotated in Label Studio (image_rotation {result['image_rotation']}); not converted",
        )
    labels = value.get("rectanglelabels", value.get("labels"))
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        return [], f"{ref}: no label (rectanglelabels {json.dumps(labels)[:40]})"
    rotation = float(value["rotation"]) if _is_number(value.get("rotation")) else 0.0
    size = (result.get("original_width"), result.get("original_height"))
    original = (float(size[0]), float(size[1])) if all(_is_number(v) and v > 0 for v in size) else None
    rects = [_Rect(ref, label, *(float(v) for v in numbers), rotation, original) for label in labels]
    note = f"{ref}: {len(labels)} labels ({', '.join(labels)}): one box each" if len(labels) > 1 else ""
    return rects, note


def corners(rect: _Rect, width: int, height: int) -> tuple[float, float, float, float]:
    """The rectangle in pixels of a ``width`` x ``height`` image; a rotated one as its axis-aligned bounding box."""
    x, y = rect.x / 100 * width, rect.y / 100 * height
    w, h = rect.width / 100 * width, rect.height / 100 * height
    if not rect.rotation % 360:
        return x, y, x + w, y + h
    # Label Studio rotates clockwise (on screen, y down) about the top-left corner (x, y).
    cos, sin = math.cos(math.radians(rect.rotation)), math.sin(math.radians(rect.rotation))
    xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs), max(ys)


def _boxes(task: _Task, classes: dict[str, int], export: Path) -> list[Problem]:
    """Fill the task's sample with pixel boxes (its image has been inspected); problems and notes found."""
    sample, problems = task.sample, []
    width, height = sample.width, sample.height
    sizes = {rect.original for rect in task.rects}
    if None in sizes and task.rects:
        reason = f"{task.ref}: original_width/original_height missing: the image's size {width}x{height} is used"
        problems.append(Problem(export, reason, NOTE))
    if differing := sorted(f"{w:g}x{h:g}" for w, h in sizes - {None, (width, height)}):
        reason = (
            f"{task.ref}: original size {', '.join(differing)} in the export differs from the file's "
            f"{width}x{height}; the percent coordinates are applied to the file's size"
        )
        problems.append(Problem(export, reason, NOTE))
    for rect in task.rects:
        if rect.label not in classes:
            reason = f"{rect.ref}: label {rect.label!r} is not in the class list (--classes)"
            problems.append(Problem(export, reason, DROPPED_BOX))
            continue
        x1, y1, x2, y2 = corners(rect, width, height)
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            reason = f"{rect.ref}: box lies outside the {width}x{height} image"
            problems.append(Problem(export, reason, DROPPED_BOX))
            continue
        moved = max(abs(a - b) for a, b in zip(clipped, (x1, y1, x2, y2)))
        if rect.rotation % 360:
            reason = f"{rect.ref}: rotated {rect.rotation:g} degrees: its axis-aligned bounding box is used"
            problems.append(Problem(export, reason + (", clipped to the image" if moved > TOLERANCE_PX else ""), NOTE))
        elif moved > TOLERANCE_PX:
            problems.append(Problem(export, f"{rect.ref}: box clipped to the {width}x{height} image", NOTE))
        sample.boxes.append(Box(classes[rect.label], *clipped, ref=rect.ref))
    return problems


def _tasks(export: Path, data: list[Any], images: ImageFolder | None) -> tuple[list[_Task], list[Problem]]:
    """One `_Task` per image found (tasks naming the same file share it), and what stopped the others."""
    by_image: dict[Path, _Task] = {}
    problems: list[Problem] = []
    for index, task in enumerate(data):
        name = _task_name(task, index) if isinstance(task, dict) else f"task at index {index}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            problems.append(Problem(export, f"{name}: not a task (no data)", SKIPPED_IMAGE))
            continue
        reference = task["data"].get("image")
        if not isinstance(reference, str) or not reference:
            reason = f"{name}: no data.image (the labelling config's Image must read $image)"
            problems.append(Problem(export, reason, SKIPPED_IMAGE))
            continue
        annotation, found = _annotation(task, name, export)
        problems += found
        if annotation is None:
            continue
        image = find_task_image(reference, export.parent, images)
        if isinstance(image, str):
            problems.append(Problem(export, f"{name}: image {_shown(reference)}: {image}", SKIPPED_IMAGE))
            continue
        rects, found = _rects(annotation, name, export)
        problems += found
        image = image.resolve()
        if image in by_image:
            reason = (
                f"{name} names the same image {image.name} as {by_image[image].ref}: one image with the boxes of both"
            )
            problems.append(Problem(export, reason, NOTE))
            by_image[image].rects += rects
        else:
            by_image[image] = _Task(name, Sample(image, label=export), rects)
    return list(by_image.values()), problems


def read_labelstudio(
    path: str | Path, names: list[str] | None = None, images: str | Path | None = None, workers: int = 8
) -> Collection:
    """A Label Studio JSON export of reviewed tasks, one sample per image (every image inspected, all in
    ``train``); ``names`` fixes the class order, ``images`` is where uploaded or URL images are found."""
    export = Path(path).expanduser().resolve()
    if not export.is_file():
        raise DatasetError(f"{export}: a Label Studio export is one JSON file (Export > JSON in Label Studio)")
    folder = ImageFolder(images) if images is not None else None
    tasks, problems = _tasks(export, _load(export), folder)
    names = list(names) if names is not None else sorted({rect.label for t in tasks for rect in t.rects})
    classes = {name: index for index, name in enumerate(names)}
    for task, info in zip(tasks, inspect_images([t.sample.image for t in tasks], workers)):
        task.sample.take_info(info)
        if not info.problem:
            problems += _boxes(task, classes, export)
    return Collection(names, [t.sample for t in tasks], problems)
