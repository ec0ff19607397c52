"""The screen as an MLflow model: what ``runs:/<id>/model``, ``models:/<name>@<alias>`` and ``mlflow models serve``
load (MLflow's ``loader_module`` names this module in the model's ``MLmodel``; `_load_pyfunc` makes the model).

The model runs this project's own inference path: each request's images go through `pipeline.inference.predict`
(the same decoding, letterboxing, runtime choice and safe checkpoint loading as the ``predict`` command), with the
thresholds of the ``screen.json`` kept in the model's folder beside ``MLmodel``, and each image comes back with its
detections and its verdict. ``calibrate --track`` on a ``models:/`` or ``runs:/`` model puts its screen.json there
(`pipeline.tracking.screens.serve_screen`), so the served screen is the last calibration of those weights; a model
never calibrated fails an image at any detection scoring ``conf`` (0.25) or more.

Input, one row per image, in order (a pandas DataFrame, as ``mlflow models serve`` hands over a
``dataframe_split`` or ``dataframe_records`` request):

- column ``image``: the image file's bytes, base64-encoded (PNG, JPEG, ...: how a REST client sends an image); or
- column ``path``: a path to an image file the server can read; or, from Python, a plain list of paths.

Output, one dict per input row, in the same order::

    {"image": <the path, or the row's index for an image sent as bytes>, "verdict": "pass" | "fail" | "error",
     "failed_classes": [classes with a detection at or over its threshold],
     "detections": [{"class_id": 0, "class": "scratch", "score": 0.91, "box": [x1, y1, x2, y2]}, ...],
     "error": <why the image could not be screened; only when the verdict is "error">}

An image that cannot be read or decoded is an ``"error"`` row with predict's reason, never a failed request.
Nothing is unpickled: the model is its checkpoint (``data/weights/``, loaded under the project's safe-loading
policy), its screen.json and this module, which travels in the model's ``code/`` folder with the rest of the
project (it is on no package index).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline.checkpoints import SERVED_SCREEN, SERVED_WEIGHTS

DEFAULT_CONF = 0.25  # predict's own: the lowest score kept, and the threshold of a class the screen does not name


class ServedScreen:
    """A defect screen as an MLflow model: images in, per image its detections and pass/fail verdict out.

    ``params``: ``conf``, the lowest score kept and the threshold of every class the screen does not name (default
    0.25, as predict's); lowered to the screen's lowest threshold when that is below it, as predict does. ``drift``
    (default off: a request of a few images says little): the request's images against the screen's baseline, as
    predict's drift check; every row then carries ``"drift": {"drifted": ..., "line": ...}``.
    """

    def __init__(self, weights: Path, screen: str) -> None:
        self.weights = str(weights)
        self.screen = screen

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = _rows(model_input)
        if not rows:
            return []
        conf = float((params or {}).get("conf", DEFAULT_CONF))
        drift = bool((params or {}).get("drift", False))
        with tempfile.TemporaryDirectory(prefix="yolo-pipeline-serve-") as tmp:
            return screen_rows(rows, self.weights, self.screen, conf, Path(tmp), drift)


def _load_pyfunc(data_path: str) -> ServedScreen:
    """MLflow's entry point for a ``loader_module`` model: ``data_path`` is the model's data folder."""
    from pipeline.inference.screen import read_screen
    from pipeline.telemetry import block_telemetry

    block_telemetry()
    checkpoints = sorted((Path(data_path) / SERVED_WEIGHTS).glob("*.pt"))
    if len(checkpoints) != 1:
        raise ValueError(f"{data_path}: a model of this pipeline holds one checkpoint in {SERVED_WEIGHTS}/")
    folder = model_folder(checkpoints[0])
    found = folder / SERVED_SCREEN if folder is not None else None
    screen = str(found) if found is not None and found.is_file() else ""
    if screen:
        read_screen(screen)  # a bad screen.json stops the model's load, not each request
    return ServedScreen(checkpoints[0], screen)


def model_folder(weights: Path) -> Path | None:
    """The folder holding ``MLmodel`` above the weights artifact: the model's own files, where its screen.json is."""
    for folder in weights.resolve().parents:
        if (folder / "MLmodel").is_file():
            return folder
    return None


def _rows(model_input: Any) -> list[tuple[str, Any]]:
    """The request as (kind, value) rows in order: ("image", base64 text or bytes) or ("path", a path)."""
    import pandas as pd

    if isinstance(model_input, dict):  # {"inputs": {"image": [...]}}: the same table by columns
        model_input = pd.DataFrame(model_input)
    if isinstance(model_input, pd.DataFrame):
        for column in ("image", "path"):
            if column in model_input.columns:
                return [(column, value) for value in model_input[column].tolist()]
        raise ValueError(
            f"a column 'image' (base64 image bytes) or 'path' (image files) is needed; got {list(model_input.columns)}"
        )
    if isinstance(model_input, str | os.PathLike):
        model_input = [model_input]
    return [("path", value) for value in model_input]


def screen_rows(
    rows: list[tuple[str, Any]], weights: str, screen: str, conf: float, tmp: Path, drift: bool = False
) -> list[dict[str, Any]]:
    """Predict over the rows' images as one list file, in order, and give each row its detections and verdict.

    Images sent as bytes are written into ``tmp`` first; a row that names no usable file is an error row. The
    verdicts use the thresholds predict recorded in run.json (the screen's, ``conf`` for the classes it does not name),
    so they are the verdicts predict's own summary counts."""
    from pipeline.inference import predict
    from pipeline.inference.results import Verdict, read_log

    images = tmp / "images"
    images.mkdir()
    files: list[str | None] = []  # each row's file; None when the row is already an error
    answers: list[dict[str, Any]] = []
    for index, (kind, value) in enumerate(rows):
        file, problem = _image_file(kind, value, images / f"{index:06d}")
        files.append(file)
        name = index if kind == "image" else str(value)
        answers.append({"image": name, "verdict": "error", "failed_classes": [], "detections": [], "error": problem})
    listed = [file for file in files if file is not None]
    if not listed:
        return answers
    (tmp / "images.txt").write_text("".join(f"{file}\n" for file in listed), encoding="utf-8")
    out = tmp / "out"
    result = predict(tmp / "images.txt", weights, out, screen=screen, conf=conf, progress=False, drift=drift)
    settings = json.loads((out / "run.json").read_text(encoding="utf-8"))
    thresholds = dict(settings["thresholds"])
    verdict = Verdict(thresholds, thresholds.pop("default"))
    found = {record["path"]: record for record in read_log(out / "predictions.jsonl")}
    failed = {record["path"]: record["reason"] for record in read_log(out / "errors.jsonl")}
    for answer, file in zip(answers, files, strict=True):
        if file is None:
            continue
        if file in found:
            detections = found[file]["detections"]
            failing = sorted({d["class"] for d in detections if d["score"] >= verdict.threshold(d["class"])})
            answer.update(verdict="fail" if failing else "pass", failed_classes=failing, detections=detections)
            del answer["error"]
        else:  # predict lists a file named twice (or by two names) once: such a row has no record of its own
            answer["error"] = failed.get(file, "not predicted: the same file as another row of the request")
    if drift:  # the request's images as a whole: the same answer on every row
        said = {"drifted": result.drift.drifted, "line": result.drift.line()} if result.drift else None
        for answer in answers:
            answer["drift"] = said or {"drifted": None, "line": f"drift: {result.drift_note}"}
    return answers


def _image_file(kind: str, value: Any, stem: Path) -> tuple[str | None, str]:
    """The file predict reads for one row, as it will record its path; or None and why the row cannot be screened."""
    from pipeline.inference.decode import sniff

    if kind == "path":
        text = os.fspath(value) if isinstance(value, str | os.PathLike) else ""
        if not text.strip() or "\n" in text or "\r" in text or text != text.strip():
            return None, f"not a usable file path: {value!r}"[:300]
        return str(Path(os.path.abspath(text))), ""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None, "not base64: an image is sent as its file's bytes, base64-encoded"
    else:
        return None, f"an image is base64 text, got {type(value).__name__}"
    # Named by its content's format, so predict's messages name the right kind; the content decides either way.
    path = stem.with_suffix("." + (sniff(data).lower() or "bin"))
    path.write_bytes(data)
    return str(path), ""
