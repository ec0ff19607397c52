"""The defect recipe script end to end on a small NEU-DET subset, tracked in a real MLflow server."""

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
def test_recipe_imports_sweeps_compares_promotes_and_predicts(mlflow_server, tmp_path: Path) -> None:
    work = tmp_path / "recipe"
    args = ["--neu-det", str(NEU_DET), "--work", str(work), "--images", "60", "--imgsz", "64", "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "defect_recipe.py"), *args, "--workers", "0",
         "--tracking-uri", mlflow_server.uri],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for step in range(1, 6):
        assert f"{step}/5 " in done.stdout

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
    val_images = sorted((work / "data" / "images" / "val").iterdir())
    results = work / "predictions" / f"v{champion.version}"
    lines = (results / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(val_images) >= 10 and len(lines) == len(val_images)
