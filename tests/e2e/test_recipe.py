"""The defect recipe script end to end on a small NEU-DET subset, tracked in a real MLflow server: import with a
test split, sweep, compare, calibrate within a false-reject budget, gated promotion, screening by alias, the check
on test, the review queue. NEU-DET has no defect-free image: synthetic good parts stand in for them (``--good``),
so that the measured false-reject rate, its gate and both rates on both splits are exercised (the plumbing, not a
figure about steel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"


@pytest.mark.skipif(not (NEU_DET / "data.yaml").is_file(), reason=f"NEU-DET not at {NEU_DET}")
def test_recipe_walks_the_screen_loop(mlflow_server, good_parts: Path, tmp_path: Path) -> None:
    work = tmp_path / "recipe"
    args = [
        "--neu-det",
        str(NEU_DET),
        "--work",
        str(work),
        "--images",
        "60",
        "--imgsz",
        "64",
        "--epochs",
        "1",
        "--gate",
        "AP50>=0",
        "--good",
        str(good_parts),
    ]  # a 1-epoch model scores about 0
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "defect_recipe.py"), *args, "--workers", "0",
         "--tracking-uri", mlflow_server.uri],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for step in range(1, 8):
        assert f"{step}/7 " in done.stdout

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("neu-det-recipe").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("pipeline.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    combos = {(r.data.params["augment.preset"], r.data.params["model.freeze"]) for r in children}
    assert combos == {("surface", "None"), ("surface", "10"), ("surface-light", "None"), ("surface-light", "10")}

    champion = client.get_model_version_by_alias("neu-det-defects", "champion")
    assert champion.run_id in {r.info.run_id for r in children}
    series = json.loads((work / "compare" / "plots.json").read_text(encoding="utf-8"))
    assert all(len(labels) == 4 for name, labels in series.items())
    assert (work / "compare" / "report.html").stat().st_size > 10_000
    # the screen: calibrated on val and stored with the best child's run, which the alias's version came from
    screen = json.loads((work / "calibration" / "screen.json").read_text(encoding="utf-8"))
    assert screen["split"] == "val" and screen["targets"]["default"] == 0.8
    # both sides of the screen: good images rejected (measured on the half of --good calibration saw), defective
    # images let through (every val image holds a defect)
    good_val = len(list((work / "good" / "val").iterdir()))
    good_test = len(list((work / "good" / "test").iterdir()))
    assert good_val + good_test == len(list(good_parts.iterdir())) and abs(good_val - good_test) <= 1
    rejects, escape = screen["false_reject"], screen["escape"]
    assert screen["max_false_reject"] == 0.05 and screen["prefer"] == "budget"
    assert rejects["how"] == "measured" and rejects["images"] == good_val
    assert 0 <= rejects["low"] <= rejects["rate"] <= min(rejects["high"], 0.05) and rejects["high"] <= 1
    val_images = len(list((work / "data" / "images" / "val").iterdir()))
    assert escape["defective"] == val_images and 0 <= escape["low"] <= escape["rate"] <= escape["high"] <= 1
    assert "## Good parts rejected, defective parts let through" in (work / "calibration" / "screen.md").read_text()
    assert (work / "calibration" / "operating_curve.png").stat().st_size > 1000
    assert (
        f"false-reject rate: {rejects['rate']:.1%} [{rejects['low']:.1%}, {rejects['high']:.1%}], measured on "
        f"{good_val} good images (budget 5%)" in done.stdout
    )
    assert f"measured on {good_test} good images" in done.stdout  # the check on test, on the other half
    assert done.stdout.count("escape rate (defective images not flagged): ") == 2  # val and test
    assert champion.tags["pipeline.promotion.decision"] == "accepted"
    # the false_reject gate measured the same good images at the stored thresholds: calibration's own rate
    assert "false_reject" in champion.tags["pipeline.promotion.gates"]
    assert float(champion.tags["pipeline.promotion.candidate.screen.false_reject"]) == pytest.approx(rejects["rate"])
    source = client.get_run(champion.run_id).data.tags
    assert json.loads(source["pipeline.screen.thresholds"]) == screen["thresholds"]
    assert json.loads(source["pipeline.screen.false_reject"])["rate"] == rejects["rate"]

    # the test images screened by the alias, with the stored thresholds; then checked and reviewed on test
    test_images = sorted((work / "data" / "images" / "test").iterdir())
    results = work / "screened" / f"v{champion.version}"
    lines = (results / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(test_images) >= 10 and len(lines) == len(test_images)
    settings = json.loads((results / "run.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in settings["thresholds"].items() if k != "default"} == screen["thresholds"]
    stored = f"stored with run {champion.run_id} (the run of models:/neu-det-defects/{champion.version})"
    assert stored in settings["thresholds_source"]
    assert settings["expected_false_reject"] == {k: rejects[k] for k in ("rate", "low", "high")}
    assert "test recall [95%]" in done.stdout
    review = work / "review" / f"v{champion.version}"
    tasks = json.loads((review / "tasks.json").read_text(encoding="utf-8"))
    rows = (review / "review.csv").read_text(encoding="utf-8").splitlines()
    assert len(tasks) >= 1 and len(rows) >= 1 + len(tasks)  # a header, and at least one finding per image
    for task in tasks:
        assert (review / task["data"]["image"].removeprefix("/data/local-files/?d=")).is_file()
