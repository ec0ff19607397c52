"""`compare` and `sweep` against a real MLflow server, on real tiny trainings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.comparison import CompareError, compare
from pipeline.sweeps.sweep import sweep
from pipeline.training.run import train
from pipeline.training.trainer import PipelineTrainer
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]


def _config_file(synth_data: Path, tmp_path: Path, uri: str, experiment: str, **sections: dict) -> Path:
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 1},
        tracking={"uri": uri, "experiment": experiment, "system_metrics": False},
        **sections,
    )
    raw = config.to_dict()
    raw["augment"] = {"mosaic": 0.0, "close_mosaic": 0}  # as written by a user: a preset may fill the rest
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_compare_three_runs_table_files_and_charts(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    variants = [("a", {"lr0": 0.01}, None), ("b", {"lr0": 0.002}, 10), ("c", {"lr0": 0.005}, None)]
    runs = []
    for name, train_keys, freeze in variants:
        config = tiny_config(
            synth_data,
            tmp_path / "runs",
            train={"epochs": 2, "name": name, "optimizer": "SGD", **train_keys},
            model={"weights": "yolo11n.yaml", "freeze": freeze},
            tracking={"uri": mlflow_server.uri, "experiment": "compare", "system_metrics": False, "run_name": name},
        )
        runs.append(train(config).run_id)
    client = MlflowClient(mlflow_server.uri)
    known = dict(zip(runs, (0.31, 0.52, 0.44), strict=True))
    for run_id, value in known.items():  # 2-epoch models score ~0: give the ranking known values
        client.log_metric(run_id, "best.mAP50_95", value, step=1000)
    other = client.create_run(
        client.get_experiment_by_name("compare").experiment_id, tags={"pipeline.kind": "prediction"}
    )
    client.set_terminated(other.info.run_id)

    out = tmp_path / "report"
    done = compare("compare", out=out, tracking_uri=mlflow_server.uri)

    assert sorted(r.run_id for r in done.runs) == sorted(runs)  # the prediction run is not a training
    assert done.table.params == ["model.freeze", "train.lr0"]  # found, not listed; names and folders left out
    assert [row["run_id"] for row in done.table.rows] == [runs[1], runs[2], runs[0]]
    assert [row["mAP50_95.best"] for row in done.table.rows] == [0.52, 0.44, 0.31]
    first = done.table.rows[0]
    assert first["model.freeze"] == "10" and first["train.lr0"] == "0.002" and first["epochs"] == 2
    assert done.table.classes == ["AP50.scratch", "AP50.pit", "AP50.patch"]  # the dataset's order, not sorted
    assert done.caution == ""  # the same epochs on the same data
    tags = client.get_run(runs[1]).data.tags  # each run's own verdict: its worst severity and the causes named
    assert tags["gradients.health"] == "info" and "frozen" in tags["gradients.causes"].split(",")  # freeze 10
    assert first["gradients"] == f"{tags['gradients.health']}: {tags['gradients.causes']}"
    assert first["train_time_s"] > 0

    with open(out / "runs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == [runs[1], runs[2], runs[0]] and rows[0]["train.lr0"] == "0.002"
    markdown = (out / "runs.md").read_text(encoding="utf-8").splitlines()
    assert len(markdown) == 2 + 3 and "model.freeze" in markdown[0]
    labels = [f"{name} ({run_id[:8]})" for name, run_id in (("b", runs[1]), ("c", runs[2]), ("a", runs[0]))]
    series = json.loads((out / "plots.json").read_text(encoding="utf-8"))
    assert set(series) == {"map50_95_by_epoch.png", "losses.png", "ap50_per_class.png", "grad_norm_per_layer.png"}
    for name, drawn in series.items():
        assert [run["label"] for run in drawn] == labels, name  # one entry per run, in the table's order
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 300, name
    steps, values = zip(*sorted((m.step, m.value) for m in client.get_metric_history(runs[1], "mAP50_95")), strict=True)
    assert series["map50_95_by_epoch.png"][0]["panels"]["mAP50-95"] == {"x": list(steps), "y": list(values)}
    assert series["ap50_per_class.png"][0]["panels"]["AP50 per class"]["x"] == ["scratch", "pit", "patch"]
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.count("data:image/png;base64,") == 4 and "http://" not in report and "https://" not in report
    assert report.count('class="best"') == 1 and runs[1] in report

    filtered = compare("compare", filter="params.`train.lr0` = '0.002'", tracking_uri=mlflow_server.uri)
    assert [r.run_id for r in filtered.runs] == [runs[1]]
    named = compare(runs=[runs[0], runs[2]], sort="train.lr0", ascending=True, tracking_uri=mlflow_server.uri)
    assert [row["run_id"] for row in named.table.rows] == [runs[2], runs[0]] and named.table.params == ["train.lr0"]

    with pytest.raises(CompareError, match="no such experiment"):
        compare("nowhere", tracking_uri=mlflow_server.uri)
    cli = subprocess.run(
        [
            *CLI,
            "compare",
            "--experiment",
            "compare",
            "--filter",
            "metrics.nonsense >",
            "--tracking-uri",
            mlflow_server.uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 2 and cli.stderr.startswith("error: compare:") and len(cli.stderr.splitlines()) == 1


def test_sweep_2x2_children_with_one_failure(
    synth_data: Path, mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config_file(synth_data, tmp_path, mlflow_server.uri, "sweep", gradients={"enabled": False})
    step = PipelineTrainer.optimizer_step

    def failing_step(self: PipelineTrainer) -> None:  # one combination breaks mid-training
        settings = self.session.config
        if settings.augment.preset == "surface" and settings.model.freeze == 10:
            raise RuntimeError("forced failure")
        step(self)

    monkeypatch.setattr(PipelineTrainer, "optimizer_step", failing_step)
    result = sweep(config, ["augment.preset=none,surface", "model.freeze=null,10"], name="grid")

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["pipeline.kind"] == "sweep" and parent.info.status == "FINISHED"
    assert (
        parent.data.params["grid.augment.preset"] == "none,surface"
        and parent.data.params["grid.model.freeze"] == "null,10"
    )
    assert parent.data.metrics["children.finished"] == 3 and parent.data.metrics["children.failed"] == 1
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'", max_results=10
    )
    assert len(children) == 4
    by_combination = {run.data.tags["pipeline.sweep.combination"]: run for run in children}
    assert set(by_combination) == {
        "augment.preset=none model.freeze=null",
        "augment.preset=none model.freeze=10",
        "augment.preset=surface model.freeze=null",
        "augment.preset=surface model.freeze=10",
    }
    for combination, run in by_combination.items():
        preset, freeze = (part.split("=")[1] for part in combination.split())
        assert run.data.params["augment.preset"] == preset
        assert run.data.params["model.freeze"] == ("None" if freeze == "null" else freeze)
        assert run.data.params["augment.symmetry"] == ("1.0" if preset == "surface" else "0.0")  # the preset's defaults
        failed = preset == "surface" and freeze == "10"
        assert run.info.status == ("FAILED" if failed else "FINISHED"), combination
        assert ("forced failure" in run.data.tags.get("pipeline.error", "")) == failed
        assert ("best.mAP50_95" in run.data.metrics) != failed
    assert [c.status for c in result.children] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]

    done = compare(parent=result.parent_run_id, tracking_uri=mlflow_server.uri)
    assert len(done.runs) == 4 and done.table.params == [
        "augment.degrees",
        "augment.preset",
        "augment.symmetry",
        "model.freeze",
    ]
    assert done.table.rows[-1]["status"] == "FAILED"  # no score: sorted last


def test_sweep_command_records_children_that_fail_before_training(
    synth_data: Path, mlflow_server, tmp_path: Path
) -> None:
    config = _config_file(synth_data, tmp_path, mlflow_server.uri, "sweep-cli")
    common = [*CLI, "sweep", str(config), "train.seed=3"]
    bad = subprocess.run(
        [*common, "--grid", "train.epochs=1,0"], capture_output=True, text=True, timeout=300
    )  # every combination is checked first: nothing trains, nothing is recorded
    assert bad.returncode == 2 and "train.epochs: must be > 0" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert MlflowClient(mlflow_server.uri).get_experiment_by_name("sweep-cli") is None

    done = subprocess.run(
        [*common, "--grid", "model.weights=missing-a.pt,missing-b.pt", "--name", "weights"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "sweep: 0 of 2 children finished, 2 failed" in done.stdout
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("sweep-cli").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("pipeline.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FAILED" and len(children) == 2
    for child in children:
        weights = child.data.params["model.weights"]
        assert child.info.status == "FAILED" and child.data.params["train.seed"] == "3"
        error = child.data.tags["pipeline.error"]  # one line naming the config (the sweep's child) and the field
        assert error.startswith("WeightsError: ") and f"sweep.yaml (sweep model.weights={weights})" in error
        assert f": model.weights: {weights}: " in error
