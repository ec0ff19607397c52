"""`calibrate` on a registered model, on a real MLflow server: thresholds, files, the calibration run, and the
thresholds stored with the model version; the recall at each threshold recomputed by pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.data.synth import CLASS_NAMES
from pipeline.drift import DIGEST_TAG, STATISTICS, Baseline
from pipeline.evaluation.matching import match_split
from pipeline.inference import predict
from pipeline.inference.options import RunOptions
from pipeline.inference.screen import read_screen
from pipeline.screen.false_rejects import false_rejects, reject_evidence
from pipeline.screen.screened_split import screened_split
from pipeline.tracking.registry import register_model
from pipeline.tracking.screens import stored_screen

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]
TARGET = 0.8


def _coco_recall(truth: dict, detections: list[dict], category: int, threshold: float) -> float:
    """pycocotools' recall at IoU 0.5 of one category's detections scoring >= threshold (no cap per image)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    kept = [dict(d) for d in detections if d["category_id"] == category and d["score"] >= threshold]
    if not kept:
        return 0.0
    coco = COCO()
    coco.dataset = truth
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(kept), "bbox")
        evaluation.params.catIds = [category]
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.maxDets = [10_000]
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
    return float(evaluation.eval["recall"][0, 0, 0, 0])


def point_at(matches, cls: str, threshold: float):
    """What ``threshold`` reaches for ``cls`` on ``matches``, by the operating points' own counting."""
    from pipeline.screen.operating_points import Choice, point, resample_counts

    per_image = matches.objects_of(cls)
    counts = resample_counts(len(per_image), 10, 0)
    return point(matches.per_class[cls], per_image, Choice(threshold, True), None, counts)


def test_calibrate_stores_thresholds_with_the_model_version(
    downscaled_training, downscaled_data: Path, good_parts: Path, mlflow_server, tmp_path: Path
) -> None:
    uri, name = mlflow_server.uri, "calibrate-screen"
    version = register_model(downscaled_training.run_id, name, "screen", {"pipeline.test": "calibrate"}, uri)
    model = f"models:/{name}@screen"
    out = tmp_path / "calibration"
    command = [*CLI, "calibrate", "--model", model, "--data", str(downscaled_data), "--target-recall", str(TARGET)]
    command += ["--recall", "pit=0.5", "--track", "--experiment", "calibrate-test", "--tracking-uri", uri]
    command += ["--out", str(out), "--device", "cpu", "--bootstrap", "500", "--good", str(good_parts)]
    cli = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    stdout = cli.stdout

    # the files, and the numbers in them
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "drift_baseline.npz",
        "operating_curve.png",
        "pr_curves.png",
        "screen.json",
        "screen.md",
    ]
    for picture in ("pr_curves.png", "operating_curve.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    screen = read_screen(out / "screen.json")
    assert screen.model == model and screen.split == "val" and screen.mode == "recall"
    assert screen.targets == {"default": TARGET, "pit": 0.5} and screen.iou == 0.5
    assert screen.bootstrap["samples"] == 500 and screen.bootstrap["seed"] == 0
    training = MlflowClient(uri).get_run(downscaled_training.run_id)
    assert screen.data_hash == training.data.tags["dataset.hash"]  # the same hash the training recorded
    assert len(screen.model_sha256) == 64
    assert set(screen.thresholds) == set(CLASS_NAMES) == set(screen.classes)
    markdown = (out / "screen.md").read_text(encoding="utf-8")
    for cls, point in screen.classes.items():
        target = 0.5 if cls == "pit" else TARGET
        assert 0.0 <= point.threshold <= 1.0 and point.threshold == screen.thresholds[cls] and point.target == target
        assert point.objects > 0 and 0.0 <= point.recall_low <= point.recall <= point.recall_high <= 1.0
        assert 0.0 <= point.precision <= 1.0 and point.fp_per_image >= 0.0
        if point.reached:
            assert point.recall >= target, cls
        else:  # the target is out of reach, or the false-reject budget held the class below it: said either way
            assert f"class {cls}: recall {target:g} cannot be reached" in stdout or f"class {cls}: short: " in stdout
        assert f"| {cls} | {point.threshold:.4g} |" in markdown
    assert screen.images["images"] == 80 and screen.images["defective"] + screen.images["good"] == 80
    assert f"defective images flagged: {screen.images['defective_flagged']} of {screen.images['defective']}" in stdout

    # both sides of the screen: good images falsely rejected, measured on --good and the split's own backgrounds
    good = len(list(good_parts.iterdir()))
    rejects = screen.false_reject
    assert rejects["how"] == "measured" and rejects["images"] == good + screen.images["good"]
    assert 0.0 <= rejects["low"] <= rejects["rate"] <= rejects["high"] <= 1.0
    assert screen.max_false_reject == 0.05 and screen.prefer == "budget" and screen.good == str(good_parts)
    assert rejects["rate"] <= 0.05 + 1e-9 or "is over the 5% budget" in stdout
    assert f"false-reject rate: {rejects['rate']:.1%} [{rejects['low']:.1%}, {rejects['high']:.1%}]" in stdout
    assert screen.escape["defective"] == screen.images["defective"] and 0.0 <= screen.escape["rate"] <= 1.0
    assert "## Good parts rejected, defective parts let through" in markdown and "(operating_curve.png)" in markdown

    # what the command said
    header = next(line for line in stdout.splitlines() if line.startswith("class "))
    assert header.split()[:3] == ["class", "threshold", "target"]
    assert re.search(r"^calibration: \d+\.\d s beyond the model's inference \(\d+\.\d s\)$", stdout, re.M)
    run_id = re.search(r"^MLflow run: (\w+) \(experiment calibrate-test\)$", stdout, re.M).group(1)
    assert f"thresholds attached to models:/{name}/{version} (tags pipeline.screen.*; screen.json in run {run_id})" in (
        stdout
    )

    # the recall at each threshold, recomputed by pycocotools from the split screened again: exactly the recall our
    # matching gives those detections, and calibrate's own within one object (a threshold the budget raised sits
    # just above a score, and a second screening may move a score by 1e-7)
    screening = RunOptions(conf=0.001, device="cpu", tracking_uri=uri)
    found, problems, _ = screened_split(model, downscaled_data, screening, split="val")
    truth, detections = found.truth, found.detections
    assert problems == 0 and len(truth["images"]) == 80
    again = match_split(truth, detections)
    for index, cls in enumerate(CLASS_NAMES):
        point = screen.classes[cls]
        assert point.objects == sum(1 for a in truth["annotations"] if a["category_id"] == index + 1)
        ours = point_at(again, cls, point.threshold).recall
        assert _coco_recall(truth, detections, index + 1, point.threshold) == pytest.approx(ours, abs=1e-9)
        assert ours == pytest.approx(point.recall, abs=1.01 / point.objects), cls

    # and from what `predict` itself finds in the same images: the screen's detections, so exactly its recall
    ids = {image["file_name"]: image["id"] for image in truth["images"]}
    predicted = predict(downscaled_data.parent / "images" / "val", model, tmp_path / "predicted", conf=0.001,
                        tracking_uri=uri, progress=False)  # fmt: skip
    # the drift baseline: the split at the screen's thresholds, named by screen.json, stored with the calibration run
    # and found from the version by predict, which sees the same images at the same thresholds: nothing drifted
    baseline = Baseline.load(out / "drift_baseline.npz")
    assert screen.drift_baseline == {"file": "drift_baseline.npz", "sha256": baseline.digest(), "images": 80}
    assert baseline.split == "val" and baseline.model_sha256 == screen.model_sha256
    assert baseline.thresholds == screen.thresholds and baseline.sample.embeddings.shape[0] == 80
    assert predicted.drift is not None and predicted.drift.baseline["digest"] == baseline.digest()
    assert predicted.drift.images == 80 and not predicted.drift.drifted
    tested = [predicted.drift.check(name) for name in STATISTICS if not predicted.drift.check(name).skipped]
    assert len(tested) >= 3 and all(check.p == 1.0 for check in tested)  # the same images on each side
    assert all(predicted.drift.check(name).skipped == "one value on both sides" for name in ("width", "height"))
    # the same detections, but for the last digits of a score where the two runs chose another runtime
    assert all(check.p > 0.5 for check in predicted.drift.ran), predicted.drift.to_json()
    boxes = [
        {"image_id": ids[r["path"]], "category_id": d["class_id"] + 1, "score": d["score"],
         "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]]}
        for line in (predicted.out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        for r in [json.loads(line)] for d in r["detections"]
    ]  # fmt: skip
    for index, cls in enumerate(CLASS_NAMES):
        point = screen.classes[cls]
        assert _coco_recall(truth, boxes, index + 1, point.threshold) == pytest.approx(
            point.recall, abs=1.01 / point.objects
        ), cls  # a score at the threshold may move by 1e-7

    # the good parts screened by predict at the screen's thresholds: the rejects calibrate counted (a score at a
    # threshold may move by 1e-7, so one image either way)
    screened = predict(good_parts, model, tmp_path / "good-screened", screen=str(out / "screen.json"),
                       tracking_uri=uri, progress=False, device="cpu")  # fmt: skip
    counted = screened.failed_verdicts + screen.images["good_rejected"]
    assert abs(counted - round(rejects["rate"] * rejects["images"])) <= 1
    assert screened.screen_warning == ""  # the screen fails good parts as often as its calibration said

    # without good images the rate is estimated from the false detections outside every labelled box: two noisy
    # figures of one rate, so their intervals meet
    estimate = false_rejects(reject_evidence(match_split(truth, detections), None), screen.thresholds, samples=500)
    assert estimate.how == "estimated" and estimate.images == screen.images["defective"]
    assert 0.0 <= estimate.low <= estimate.rate <= estimate.high <= 1.0 and estimate.high > 0.0
    assert estimate.low <= rejects["high"] and rejects["low"] <= estimate.high, (estimate, rejects)

    # the calibration run
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["pipeline.kind"] == "calibration"
    assert run.data.tags["pipeline.model_run_id"] == downscaled_training.run_id
    for cls, point in screen.classes.items():
        assert run.data.metrics[f"threshold.{cls}"] == pytest.approx(point.threshold)
        assert run.data.metrics[f"recall.{cls}"] == pytest.approx(point.recall)
        assert run.data.metrics[f"objects.{cls}"] == point.objects
    assert run.data.metrics["images.defective"] == screen.images["defective"]
    assert run.data.params["data_hash"] == screen.data_hash and run.data.params["target_recall.pit"] == "0.5"
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "screen",
        "screen.md",
        "pr_curves.png",
        "operating_curve.png",
    }
    assert run.data.metrics["false_reject.rate"] == pytest.approx(screen.false_reject["rate"])
    assert [a.path for a in client.list_artifacts(run_id, "screen")] == [
        "screen/drift_baseline.npz",
        "screen/screen.json",
    ]

    # the model version holds the thresholds, and predict's reader finds them by alias
    tags = client.get_model_version(name, version).tags
    assert json.loads(tags["pipeline.screen.thresholds"]) == screen.thresholds
    assert tags["pipeline.screen.run"] == run_id and tags["pipeline.screen.about"] == screen.describe()
    assert json.loads(tags["pipeline.screen.false_reject"]) == screen.false_reject
    assert tags[DIGEST_TAG] == baseline.digest()
    found = stored_screen(model, uri)
    assert found is not None and found.thresholds == screen.thresholds and found.source == f"models:/{name}/{version}"


def test_calibrate_names_the_classes_when_one_is_unknown(downscaled_data: Path, tmp_path: Path) -> None:
    command = [*CLI, "calibrate", "--model", "missing.pt", "--data", str(downscaled_data), "--recall", "scrach=0.9"]
    cli = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert (
        cli.stderr.strip()
        .splitlines()[-1]
        .endswith(f"--recall: no class scrach; the model's classes: {', '.join(CLASS_NAMES)}")
    )
    assert not (tmp_path / "calibration").exists()


def test_check_reports_what_the_thresholds_reach_on_another_split(
    downscaled_training, downscaled_data: Path, tmp_path: Path
) -> None:
    """`calibrate --check`: a split whose images are val's again (named test in a second data.yaml) must give
    exactly the calibration's own numbers, interval included (same images, thresholds and bootstrap seed)."""
    from pipeline.screen.calibrate import calibrate
    from pipeline.screen.check import check_screen

    model = str(downscaled_training.best_weights)
    done = calibrate(model, downscaled_data, target_recall=TARGET, out=tmp_path / "cal", device="cpu", bootstrap=200)
    spec = yaml.safe_load(downscaled_data.read_text(encoding="utf-8"))
    again = tmp_path / "again.yaml"
    root = downscaled_data.parent
    again.write_text(
        yaml.safe_dump({"path": str(root), "train": spec["train"], "val": spec["val"], "test": spec["val"],
                        "names": spec["names"]}),
        encoding="utf-8",
    )  # fmt: skip
    checked = check_screen(model, again, done.screen, split="test", device="cpu", bootstrap=200)
    for cls, point in done.screen.classes.items():
        reached = checked.classes[cls]
        assert reached.threshold == point.threshold and reached.objects == point.objects
        assert (reached.recall, reached.recall_low, reached.recall_high) == (
            point.recall, point.recall_low, point.recall_high
        )  # fmt: skip
        assert reached.precision == pytest.approx(point.precision) and reached.fp_per_image == pytest.approx(
            point.fp_per_image
        )
    assert checked.images == done.screen.images
    # both rates at image level, as calibration found them on the same images (same thresholds and seed)
    assert asdict(checked.false_reject) == done.screen.false_reject and checked.escape == done.screen.escape
    assert any(line.startswith(checked.false_reject.line() + "; calibration expected") for line in checked.lines)
    rows = {row["class"]: row for row in checked.rows()}
    assert rows["pit"]["recall.val"] == rows["pit"]["recall.test"] == done.screen.classes["pit"].recall

    cli = subprocess.run(
        [*CLI, "calibrate", "--model", model, "--data", str(downscaled_data), "--check", str(tmp_path / "cal" / "screen.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines()[-1].endswith("check it on another split")


def test_a_version_without_thresholds_has_those_of_the_run_it_came_from(weak_training, mlflow_server) -> None:
    """A screen attached to ``runs:/<id>/model`` (calibrated before promotion) is found through the promoted version."""
    from pipeline.tracking.screens import attach_screen

    uri, run_id = mlflow_server.uri, weak_training.run_id
    thresholds = {"scratch": 0.31, "pit": 0.42, "patch": 0.27}
    assert attach_screen(f"runs:/{run_id}/model", thresholds, "by hand", "calibration-run", uri) == f"run {run_id}"
    version = register_model(run_id, "screen-fallback", "champion", {}, uri)
    found = stored_screen("models:/screen-fallback@champion", uri)
    assert found is not None and found.thresholds == thresholds and found.about == "by hand"
    assert found.source == f"run {run_id} (the run of models:/screen-fallback/{version})"
    assert found.calibration_run == "calibration-run"
    assert stored_screen(str(weak_training.best_weights), uri) is None  # a file holds no stored screen
