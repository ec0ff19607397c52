"""A screen's thresholds on a real MLflow server: stored with a registered version, applied by `predict` by alias
(overridable per class), and the two review queues (`predict --review`, `evaluate --review --screen`).

The model is `downscaled_training`'s (tests/conftest.py), registered here under a name of this file's own;
one prediction by alias over the val images serves most assertions.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.evaluation.evaluation import evaluate
from pipeline.inference import PredictOptions, predict
from pipeline.inference.engine import _screen_thresholds
from pipeline.inference.screen import Screen
from pipeline.tracking import screens
from pipeline.tracking.registry import register_model
from pipeline.tracking.screens import attach_screen

pytestmark = pytest.mark.slow
NAME, ALIAS = "screen-predict-test", "line"
ABOUT = "calibrated on val of data.yaml (recall >= 0.9, 2026-12-01)"
BAND = 0.1


def _thresholds(classes: list[str]) -> dict[str, float]:
    """Known, distinct per-class thresholds: 0.3, 0.2, 0.25, ..."""
    return {name: (0.3, 0.2, 0.25, 0.35, 0.15, 0.4)[k % 6] for k, name in enumerate(classes)}


@pytest.fixture(scope="module")
def setup(downscaled_training, downscaled_data: Path, mlflow_server) -> SimpleNamespace:
    classes = list(yaml.safe_load(downscaled_data.read_text())["names"].values())
    version = register_model(downscaled_training.run_id, NAME, ALIAS, {}, mlflow_server.uri)
    where = attach_screen(f"models:/{NAME}@{ALIAS}", _thresholds(classes), ABOUT, "", mlflow_server.uri)
    assert where == f"models:/{NAME}/{version}"
    return SimpleNamespace(classes=classes, version=version, val=downscaled_data.parent / "images" / "val")


@pytest.fixture(scope="module")
def by_alias(setup: SimpleNamespace, mlflow_server, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`yolo-pipeline predict --model models:/...@line --review DIR --track`, in this process: its printed summary."""
    folder = tmp_path_factory.mktemp("by-alias")
    out, review = folder / "out", folder / "review"
    capture, printed = _Capture(), io.StringIO()
    logging.getLogger("pipeline").addHandler(capture)
    asked: list[str] = []  # the store's lookups of the stored screen: the thresholds and the drift check share one
    looked_up = screens.stored_screen
    try:
        with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as patch:
            patch.setattr(screens, "stored_screen", lambda *a: asked.append(a[0]) or looked_up(*a))
            code = main(
                [
                    *("predict", str(setup.val), "--model", f"models:/{NAME}@{ALIAS}", "--out", str(out)),
                    *("--review", str(review), "--band", str(BAND), "--track", "--experiment", "screen-predict"),
                    *("--tracking-uri", mlflow_server.uri, "--no-progress", "--device", "cpu", "--runtime", "torch"),
                ]
            )
    finally:
        logging.getLogger("pipeline").removeHandler(capture)
    assert code == 0, printed.getvalue()
    return SimpleNamespace(out=out, review=review, printed=printed.getvalue(), logged=capture.lines, asked=asked)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _verdicts(out: Path) -> dict[str, str]:
    with open(out / "summary.csv", newline="") as f:
        return {row["path"]: row["verdict"] for row in csv.DictReader(f)}


def _expected(records: list[dict], thresholds: dict[str, float]) -> dict[str, str]:
    return {
        r["path"]: "fail" if any(d["score"] >= thresholds[d["class"]] for d in r["detections"]) else "pass"
        for r in records
    }


def test_predict_by_alias_applies_the_stored_thresholds(setup, by_alias, mlflow_server) -> None:
    stored = _thresholds(setup.classes)
    source = f"{ABOUT}, stored with models:/{NAME}/{setup.version}"
    assert f"thresholds: {source}\n" in by_alias.printed
    assert by_alias.asked == [f"models:/{NAME}/{setup.version}"]  # once, for the version the alias pinned
    settings = json.loads((by_alias.out / "run.json").read_text())
    assert settings["thresholds"] == {**stored, "default": 0.25} and settings["thresholds_source"] == source
    records = _records(by_alias.out)
    assert len(records) == 80
    assert _verdicts(by_alias.out) == _expected(records, stored)
    # The lowest threshold less the review band is below --conf: the kept conf is lowered to it, and said.
    lowest = min(stored.values())
    assert settings["conf"] == pytest.approx(lowest - BAND)
    assert any(line.startswith(f"predict: --conf 0.25 lowered to {lowest - BAND:g}") for line in by_alias.logged)
    scores = [d["score"] for r in records for d in r["detections"]]
    assert scores and min(scores) >= lowest - BAND and min(scores) < lowest  # scores under a threshold are seen
    # The MLflow summary of the prediction names them too.
    (run,) = MlflowClient(mlflow_server.uri).search_runs(
        [MlflowClient(mlflow_server.uri).get_experiment_by_name("screen-predict").experiment_id]
    )
    assert run.data.params["thresholds_source"] == source


def test_a_threshold_override_changes_exactly_that_class(setup, mlflow_server, tmp_path: Path) -> None:
    stored = _thresholds(setup.classes)
    name = setup.classes[0]
    found = predict(
        setup.val,
        f"models:/{NAME}@{ALIAS}",
        tmp_path / "override",
        PredictOptions(
            thresholds={name: 0.6}, tracking_uri=mlflow_server.uri, progress=False, device="cpu", runtime="torch"
        ),
    )
    given = {**stored, name: 0.6}
    assert found.thresholds == {**given, "default": 0.25}
    assert (
        found.thresholds_source
        == f"{ABOUT}, stored with models:/{NAME}/{setup.version}; --threshold {name}=0.6 overrides"
    )
    assert found.conf == min(stored.values())  # no review: lowered to the lowest threshold only
    records = _records(tmp_path / "override")
    verdicts = _verdicts(tmp_path / "override")
    assert verdicts == _expected(records, given)
    changed = {path for path, v in _expected(records, stored).items() if v != verdicts[path]}
    for r in records:  # an image whose verdict moved has a detection of that class between the two thresholds
        if r["path"] in changed:
            assert any(d["class"] == name and stored[name] <= d["score"] < 0.6 for d in r["detections"])


def test_a_store_that_does_not_answer_costs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.inference")
    options = PredictOptions(tracking_uri="http://127.0.0.1:9", thresholds={"scratch": 0.5})
    opened = SimpleNamespace(pinned=f"models:/{NAME}/1")
    assert _screen_thresholds(f"models:/{NAME}@{ALIAS}", opened, options, None) == ({}, "", None)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"predict: the thresholds stored with models:/{NAME}@{ALIAS} could not be looked up (")
    assert line.endswith("; verdicts use --threshold and --conf") and "\n" not in line


def _percent_box_ok(result: dict) -> bool:
    v = result["value"]
    return (
        0 <= v["x"] <= 100
        and 0 <= v["y"] <= 100
        and v["width"] > 0
        and v["height"] > 0
        and v["x"] + v["width"] <= 100 + 1e-6
        and v["y"] + v["height"] <= 100 + 1e-6
    )


def _local_file(folder: Path, url: str) -> Path:
    """The file Label Studio's local-file storage rooted at ``folder`` serves for ``/data/local-files/?d=...``."""
    parts = urlsplit(url)
    assert parts.path == "/data/local-files/"
    return folder / parse_qs(parts.query)["d"][0]


def test_predict_review_writes_label_studio_tasks_for_the_uncertain_images(setup, by_alias) -> None:
    stored = _thresholds(setup.classes)
    folder = by_alias.review
    tasks = json.loads((folder / "tasks.json").read_text())
    rows = list(csv.DictReader((folder / "review.csv").open()))
    # Recomputed from the log: each image with a class's top score within the band of its threshold.
    expected = {}
    for r in _records(by_alias.out):
        top: dict[str, float] = {}
        for d in r["detections"]:
            top[d["class"]] = max(top.get(d["class"], 0), d["score"])
        close = [abs(s - stored[c]) for c, s in top.items() if abs(s - stored[c]) <= BAND + 1e-9]
        if close:
            expected[r["path"]] = min(close)
    assert tasks and len(tasks) == len(expected)
    assert [t["data"]["source"] for t in tasks] == sorted(expected, key=lambda p: (expected[p], p))
    assert {row["image"] for row in rows} == set(expected)
    for row in rows:
        assert float(row["distance"]) <= BAND + 1e-4
        assert float(row["distance"]) == pytest.approx(abs(float(row["score"]) - stored[row["class"]]), abs=1e-4)
    for t in tasks:
        image = _local_file(folder, t["data"]["image"])
        assert image.is_file() and image.parent == folder / "images"
        assert image.read_bytes() == Path(t["data"]["source"]).read_bytes()
        assert "annotations" not in t
        (prediction,) = t["predictions"]
        assert prediction["result"] and all(_percent_box_ok(r) for r in prediction["result"])
        assert {r["value"]["rectanglelabels"][0] for r in prediction["result"]} <= set(setup.classes)
        assert all(r["original_width"] == 128 and r["original_height"] == 128 for r in prediction["result"])
    assert len(list((folder / "images").iterdir())) == len(tasks)
    assert f"review:     {len(tasks)} uncertain images" in by_alias.printed


def _iou(a: list[float], b: list[float]) -> float:
    """Boxes as COCO xywh."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def test_evaluate_review_at_a_screen_file(setup, downscaled_training, downscaled_data: Path, tmp_path: Path) -> None:
    thresholds = _thresholds(setup.classes)
    screen = Screen(thresholds, "best.pt", "data.yaml", "val", "2026-12-01T00:00:00Z", targets={"default": 0.9})
    screen.write(tmp_path / "screen.json")
    done = evaluate(
        str(downscaled_training.best_weights),
        downscaled_data,
        device="cpu",
        out=tmp_path / "eval",
        review=tmp_path / "queue",
        screen=tmp_path / "screen.json",
    )
    review, folder = done.review, tmp_path / "queue"
    assert review["thresholds_source"] == f"{screen.describe()}, from {tmp_path / 'screen.json'}"
    # Recomputed from the evaluation's own files: greedy by score, same class, IoU >= 0.5.
    truth = json.loads((tmp_path / "eval" / "ground_truth.json").read_text())
    detections = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    best: dict = {}
    for d in detections:  # one class per box, as predict reports it (evaluate's NMS is multi-label, for mAP)
        key = (d["image_id"], tuple(d["bbox"]))
        if key not in best or d["score"] > best[key]["score"]:
            best[key] = d
    detections = list(best.values())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    missed = alarms = 0
    wrong_images = set()
    for image in truth["images"]:
        objects = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        shown = [
            d for d in detections if d["image_id"] == image["id"] and d["score"] >= thresholds[names[d["category_id"]]]
        ]
        used: set[int] = set()
        image_alarms = 0
        for d in sorted(shown, key=lambda d: -d["score"]):
            best = max(
                (k for k, a in enumerate(objects) if k not in used and a["category_id"] == d["category_id"]),
                key=lambda k: _iou(objects[k]["bbox"], d["bbox"]),
                default=None,
            )
            if best is not None and _iou(objects[best]["bbox"], d["bbox"]) >= 0.5:
                used.add(best)
            else:
                image_alarms += 1
        missed += len(objects) - len(used)
        alarms += image_alarms
        if len(objects) - len(used) + image_alarms:
            wrong_images.add(image["file_name"])
    assert (review["missed"], review["false_alarms"], review["images"]) == (missed, alarms, len(wrong_images))
    assert missed + alarms > 0
    rows = list(csv.DictReader((folder / "review.csv").open()))
    assert len(rows) == missed + alarms
    assert sum(r["kind"] == "missed" for r in rows) == missed
    assert len(list((folder / "crops").iterdir())) == len(rows) and all((folder / r["crop"]).is_file() for r in rows)
    tasks = json.loads((folder / "tasks.json").read_text())
    assert len(tasks) == len(wrong_images) == len(list((folder / "images").iterdir()))
    worst = [t["data"]["missed"] + t["data"]["false_alarms"] for t in tasks]
    assert worst == sorted(worst, reverse=True)  # worst first
    for t in tasks:
        assert t["data"]["source"] in wrong_images and _local_file(folder, t["data"]["image"]).is_file()
        assert all(_percent_box_ok(r) for r in t["annotations"][0]["result"] + t["predictions"][0]["result"])
        assert all(r["score"] >= thresholds[r["value"]["rectanglelabels"][0]] for r in t["predictions"][0]["result"])
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["review"]["missed"] == missed


def _floor_screen(classes: list[str], folder: Path, threshold: float) -> Path:
    """A screen.json whose calibration expected 4% [2%, 7%] of good images to fail, at ``threshold`` for every class
    (0.001: the score floor, the screen of a target no threshold could reach)."""
    screen = Screen(
        thresholds=dict.fromkeys(classes, threshold),
        model="m.pt",
        data="data.yaml",
        split="val",
        created="2026-12-06T00:00:00+00:00",
        false_reject={"rate": 0.04, "low": 0.02, "high": 0.07, "how": "measured", "images": 300},
    )
    return screen.write(folder / "screen.json")


def test_predict_never_screens_blind(setup, good_parts: Path, mlflow_server, tmp_path: Path) -> None:
    """Good parts through a floor-threshold screen: the fails far above what its calibration expected are said in
    one line at the end, in run.json and as a tag of the tracked summary; the same parts through a screen that
    passes them say nothing."""
    floor = _floor_screen(setup.classes, tmp_path, 0.001)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                *("predict", str(good_parts), "--model", f"models:/{NAME}@{ALIAS}", "--out", str(tmp_path / "floor")),
                *("--screen", str(floor), "--track", "--experiment", "screen-blind"),
                *("--tracking-uri", mlflow_server.uri, "--no-progress", "--device", "cpu", "--runtime", "torch"),
            ]
        )
    assert code == 0, printed.getvalue()
    images = len(list(good_parts.iterdir()))
    fails = sum(v == "fail" for v in _verdicts(tmp_path / "floor").values())
    assert fails > 0.5 * images  # at the score floor almost every good part fails
    line = (
        f"this screen failed {fails} of {images} images ({fails / images:.0%}); its calibration expected 4% [2%, 7%] "
        "of good images to fail: the images differ from the calibration split, or the screen is wrong"
    )
    assert printed.getvalue().splitlines()[-1] == f"warning:    {line}"
    settings = json.loads((tmp_path / "floor" / "run.json").read_text())
    assert settings["screen_warning"] == line
    assert settings["expected_false_reject"] == {"rate": 0.04, "low": 0.02, "high": 0.07}
    client = MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("screen-blind").experiment_id])
    assert run.data.tags["pipeline.screen.warning"] == line

    passing = (
        _floor_screen(setup.classes, tmp_path / "passing", 1.0) if (tmp_path / "passing").mkdir() is None else None
    )
    found = predict(
        good_parts,
        f"models:/{NAME}@{ALIAS}",
        tmp_path / "passed",
        PredictOptions(screen=str(passing), tracking_uri=mlflow_server.uri, progress=False, device="cpu"),
    )
    assert found.failed_verdicts == 0 and found.screen_warning == ""
    assert "screen_warning" not in json.loads((tmp_path / "passed" / "run.json").read_text())
