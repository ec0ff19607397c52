"""One writer per folder: two commands started together into the same folder, as a cron job overlapping a
manual run, or two line PCs writing to one shared folder.

Whatever the timing, every image is predicted once, every record sent once, nothing is half-written: the
second process either stops at once with one line naming the first (exit 2), or, with ``--wait``, waits and
then finds the work done. Two real processes are started together for each command that resumes or replaces
a folder; the refusal itself is shown deterministically with the folder held by another process (`hold`)
while the command runs here. Trainings and sweeps are shown that way only: a second training costs minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.data.synth import synthesize
from pipeline.destinations import MARKER, marker_of
from tests.helpers.configs import untracked_training
from tests.helpers.processes import hold

CLI = [sys.executable, "-m", "pipeline.cli"]
BUSY = re.compile(
    r"^error: (?P<folder>.+) is being written by (?P<command>[a-z ]+) \(pid (?P<pid>\d+), started \d\d:\d\d\); "
    r"(?P<rest>.+)$"
)


# ---- helpers ------------------------------------------------------------------------------------------------


def together(*argvs: list[str]) -> list[tuple[subprocess.Popen, str, str]]:
    """Start the commands at the same moment, each in its own process; (process, stdout, stderr) of each."""
    processes = [
        subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs
    ]
    return [(p, *p.communicate(timeout=600)) for p in processes]


def one_writer(runs: list[tuple[subprocess.Popen, str, str]], command: str, rest: str, wait: bool) -> list[str]:
    """Every run succeeded, or (without --wait) every other one stopped at once with the one line naming a
    process that did; the winners' stdout."""
    pids = {p.pid for p, _, _ in runs}
    winners = [out for p, out, _ in runs if p.returncode == 0]
    assert winners, [(p.returncode, err) for p, _, err in runs]
    for process, _, err in runs:
        if process.returncode == 0:
            continue
        assert not wait and process.returncode == 2, (process.returncode, err)
        lines = err.strip().splitlines()
        found = BUSY.match(lines[-1]) if lines else None
        assert len(lines) == 1 and found, err
        assert found["command"] == command and found["rest"] == rest, lines[0]
        assert int(found["pid"]) in pids - {process.pid}, lines[0]
    return winners


def refused_here(argv: list[str], capsys: pytest.CaptureFixture, holder: subprocess.Popen, command: str) -> re.Match:
    """Run the command in this process while ``holder`` holds its folder: exit 2, one line naming the holder."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    found = BUSY.match(lines[0])
    assert found and int(found["pid"]) == holder.pid and found["command"] == command, lines[0]
    return found


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under ``root``, hidden ones included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def debris(root: Path) -> list[str]:
    """Temporary files, staging or old folders and lock files anywhere under ``root`` (there must be none)."""
    marks = (".tmp", ".staging-", ".old-", ".lock")
    found = (p for p in root.rglob("*") if any(m in p.name for m in marks) and p.name != "mlflow.db.lock")
    return sorted(p.relative_to(root).as_posix() for p in found)  # mlflow.db.lock: the store's own, kept


def lines_of(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") or not text  # nothing half-written
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite tracking store, made once (its tables take seconds): each test uses experiments of its own."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('one-writer-store') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-image, 32-px YOLO dataset (16 train, 4 val) to split, import and describe."""
    return synthesize(tmp_path_factory.mktemp("one-writer-src") / "set", images=20, seed=4, size=32).data_yaml


@pytest.fixture(scope="module")
def model_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic 64-px images (19 train, 5 val): the tiny model below learns on them, and is evaluated on val."""
    return synthesize(tmp_path_factory.mktemp("one-writer-model-data") / "set", images=24, seed=5, size=64).data_yaml


@pytest.fixture(scope="module")
def model(model_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of an untracked tiny training: any model will do, the results' content is not the point."""
    return untracked_training(model_data, tmp_path_factory.mktemp("one-writer-model")).best_weights


# ---- data synth, split, import, stats: two real processes at once --------------------------------------------


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_two_synths_at_once_leave_one_whole_set(tmp_path: Path, wait: bool) -> None:
    argv = ["data", "synth", "--out", "set", "--images", "60", "--size", "32", *(["--wait"] * wait)]
    runs = together(argv, argv)
    one_writer(runs, "data synth", "wait or choose another --out", wait)
    out = tmp_path / "set"
    assert len(list((out / "images" / "train").glob("*.png"))) == 48
    assert len(list((out / "labels" / "val").glob("*.txt"))) == 12
    assert (out / "data.yaml").is_file() and marker_of(out)["kind"] == "synthetic"
    assert debris(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["set"]


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_two_splits_and_two_imports_at_once_leave_whole_datasets(small_set: Path, tmp_path: Path, wait: bool) -> None:
    split = ["data", "split", str(small_set), "--split", "train=0.5,val=0.5", "--out", "ds", *(["--wait"] * wait)]
    imported = ["data", "import", str(small_set), "--name", "parts", "--out", "datasets", *(["--wait"] * wait)]
    runs = together(split, split, imported, imported)
    one_writer(runs[:2], "data split", "wait or choose another --out", wait)
    one_writer(runs[2:], "data import", "wait or choose another --name", wait)
    for out in (tmp_path / "ds", tmp_path / "datasets" / "parts"):
        assert json.loads((out / "card.json").read_text())["images"] == 20
        assert sum(1 for _ in (out / "images").rglob("*.png")) == 20 and marker_of(out)["kind"] == "dataset"
    assert debris(tmp_path) == []


def test_two_stats_at_once_write_one_whole_card(small_set: Path, tmp_path: Path) -> None:
    argv = ["data", "stats", str(small_set), "--out", "cards", "--wait"]
    runs = together(argv, argv)
    one_writer(runs, "data stats", "", wait=True)
    assert json.loads((tmp_path / "cards" / "card.json").read_text())["images"] == 20
    assert sorted(os.listdir(tmp_path / "cards")) == [MARKER, "card.json", "card.md"]
    assert debris(tmp_path) == []


# ---- predict: the case ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_two_predicts_at_once_write_every_image_once(model: Path, synth_data: Path, tmp_path: Path, wait: bool) -> None:
    source = synth_data.parent / "images" / "train"  # 96 images
    argv = ["predict", str(source), "--model", str(model), "--out", "results", "--no-progress", "--runtime", "torch"]
    runs = together(argv + ["--wait"] * wait, argv + ["--wait"] * wait)
    winners = one_writer(runs, "predict", "wait or choose another --out", wait)
    out = tmp_path / "results"
    predicted = lines_of(out / "predictions.jsonl")
    paths = [record["path"] for record in predicted]
    assert len(paths) == 96 and len(set(paths)) == 96  # every image exactly once
    assert sorted(record["image_id"] for record in predicted) == list(range(1, 97))
    assert lines_of(out / "errors.jsonl") == []
    assert len((out / "summary.csv").read_text().splitlines()) == 97
    assert isinstance(json.loads((out / "coco_results.json").read_text()), list)
    counted = [int(re.search(r"predicted (\d+) images", text)[1]) for text in winners]
    assert sum(counted) == 96  # a winner that came second found them done
    assert debris(tmp_path) == []


@pytest.mark.slow
def test_predict_with_wait_waits_for_the_writer_then_resumes(
    model: Path, synth_data: Path, tmp_path: Path, capsys
) -> None:
    source = synth_data.parent / "images" / "val"  # 24 images
    out = tmp_path / "results"
    argv = ["predict", str(source), "--model", str(model), "--out", str(out), "--no-progress", "--runtime", "torch"]
    with hold(out, "predict") as holder:
        found = refused_here(argv, capsys, holder, "predict")
        assert Path(found["folder"]) == out and found["rest"] == "wait or choose another --out"
        assert sorted(os.listdir(tmp_path)) == [".results.lock"]  # refused before anything was made
        threading.Timer(1.0, holder.stdin.close).start()  # the other process ends a moment later
        assert cli.main([*argv, "--wait"]) == 0
    err = capsys.readouterr().err
    assert f"{out} is being written by predict (pid {holder.pid}, started " in err and "waiting for it" in err
    assert len(lines_of(out / "predictions.jsonl")) == 24 and debris(tmp_path) == []


# ---- evaluate, calibrate, compare --out -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_evaluations_and_two_calibrations_at_once_write_whole_folders(
    model: Path, model_data: Path, tmp_path: Path
) -> None:
    common = ["--model", str(model), "--data", str(model_data), "--device", "cpu", "--wait"]
    evaluate = ["evaluate", *common, "--out", "ev"]
    calibrate = ["calibrate", *common, "--out", "cal", "--bootstrap", "10"]
    runs = together(evaluate, evaluate, calibrate, calibrate)
    one_writer(runs, "", "", wait=True)
    assert sorted(os.listdir(tmp_path / "ev")) == sorted(
        [MARKER, "evaluation.json", "predictions.json", "ground_truth.json"]
    )
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["images"] == 5
    assert sorted(os.listdir(tmp_path / "cal")) == sorted(
        [MARKER, "screen.json", "screen.md", "pr_curves.png", "operating_curve.png", "drift_baseline.npz"]
    )
    assert json.loads((tmp_path / "cal" / "screen.json").read_text())["thresholds"]
    assert debris(tmp_path) == []


def test_two_compares_at_once_write_one_whole_report(store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = store
    client = MlflowClient(uri)
    experiment = client.create_experiment("one-writer-compare")
    for value in (0.4, 0.6):
        run = client.create_run(experiment, run_name=f"run-{value}")
        client.log_param(run.info.run_id, "train.lr0", str(value))
        for step in (1, 2):
            client.log_metric(run.info.run_id, "mAP50_95", value * step / 4, step=step)
            client.log_metric(run.info.run_id, "train.box_loss", 2.0 / step, step=step)
        client.log_metric(run.info.run_id, "mAP50", value)
        client.set_terminated(run.info.run_id)
    argv = ["compare", "--experiment", "one-writer-compare", "--out", "cmp", "--tracking-uri", uri, "--wait"]
    runs = together(argv, argv)
    one_writer(runs, "compare", "", wait=True)
    assert marker_of(tmp_path / "cmp")["kind"] == "compare" and (tmp_path / "cmp" / "report.html").is_file()
    assert len(os.listdir(tmp_path / "cmp")) == 9 and debris(tmp_path) == []


# ---- sync: every record sent once ---------------------------------------------------------------------------------


def _spool(tmp_path: Path, uri: str, experiment: str) -> tuple[Path, int]:
    """A training's spool that was never sent (the server was away): (its training folder, its record count)."""
    from pipeline.tracking import Tracker

    (tmp_path / "notes.txt").write_text("an artifact")
    tracker = Tracker(tmp_path / "runs" / "exp" / "tracking", uri, experiment, "exp")
    tracker.open_run({"pipeline.kind": "training"})
    tracker.log_params({"train.epochs": 20})
    for step in range(1, 21):
        tracker.log_metrics({"train.box_loss": 1.0 / step}, step)
    tracker.log_artifact(tmp_path / "notes.txt")
    tracker.spool.append({"kind": "end", "status": "FINISHED", "end_time": 1})
    records = len(tracker.spool.pending())
    tracker.close()
    return tmp_path / "runs" / "exp", records


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_two_syncs_at_once_send_every_record_once(store: str, tmp_path: Path, wait: bool) -> None:
    from mlflow.tracking import MlflowClient

    uri, experiment = store, f"one-writer-sync-{wait}"
    folder, records = _spool(tmp_path, uri, experiment)
    argv = ["sync", str(folder), *(["--wait"] * wait)]
    runs = together(argv, argv)
    winners = one_writer(runs, "sync", "wait or try again when it is done", wait)
    sent = [int(re.search(r"sent (\d+) records, 0 left", text)[1]) for text in winners]
    assert sum(sent) == records  # each record once, whoever sent it
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "train.box_loss")) == 20
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["notes.txt"]
    assert json.loads((folder / "tracking" / "state.json").read_text())["acked"] == records
    assert debris(tmp_path) == []


def test_sync_leaves_a_spool_a_training_writes(tmp_path: Path, capsys) -> None:
    folder, _ = _spool(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "one-writer-busy")
    before = snapshot(folder)
    with hold(folder / "tracking", "train") as holder:
        found = refused_here(["sync", str(folder)], capsys, holder, "train")
        assert found["rest"] == "wait or try again when it is done"
        assert cli.main(["sync", "--project", str(tmp_path / "runs")]) == 1  # all of them: this one is skipped
        printed = capsys.readouterr().out
        assert printed.startswith(f"skipped {folder / 'tracking'} is being written by train (pid {holder.pid}, ")
    assert snapshot(folder) == before and not (tmp_path / "mlflow.db").exists()


# ---- every writer, refused while another process holds its folder ------------------------------------------------


def _commands(small_set: Path, tmp_path: Path) -> list[tuple[list[str], Path, str, str]]:
    """(argv, the folder it writes, its name in the line, what the line offers instead)."""
    out = "wait or choose another --out"
    source = str(small_set)
    return [
        (["data", "synth", "--out", "set", "--images", "4", "--size", "32"], tmp_path / "set", "data synth", out),
        (["data", "split", source, "--split", "train=0.5,val=0.5", "--out", "ds"], tmp_path / "ds", "data split", out),
        (
            ["data", "import", source, "--name", "parts", "--out", "datasets"],
            tmp_path / "datasets" / "parts",
            "data import",
            "wait or choose another --name",
        ),
        (["data", "stats", source, "--out", "cards"], tmp_path / "cards", "data stats", out),
        (["compare", "--experiment", "x", "--out", "cmp"], tmp_path / "cmp", "compare", out),
        (["evaluate", "--model", "m.pt", "--data", source, "--out", "ev"], tmp_path / "ev", "evaluate", out),
        (["calibrate", "--model", "m.pt", "--data", source, "--out", "cal"], tmp_path / "cal", "calibrate", out),
        (
            ["predict", str(small_set.parent / "images"), "--model", "m.pt", "--out", "res"],
            tmp_path / "res",
            "predict",
            out,
        ),
        (
            ["train", "--data", source, "train.project=runs", "train.name=exp", "train.exist_ok=true"],
            tmp_path / "runs" / "exp",
            "train",
            "wait or choose another train.name",
        ),
    ]


def test_every_writer_stops_at_once_while_another_process_writes_its_folder(
    small_set: Path, tmp_path: Path, capsys
) -> None:
    for argv, folder, command, rest in _commands(small_set, tmp_path):
        with hold(folder, command) as holder:
            before = snapshot(tmp_path)
            found = refused_here(argv, capsys, holder, command)
            assert Path(found["folder"]).resolve() == folder and found["rest"] == rest, argv
            assert snapshot(tmp_path) == before, argv  # nothing written, not even an mlflow.db
    assert sorted(os.listdir(tmp_path)) == []


def test_resume_stops_while_another_process_trains_into_the_folder(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "runs" / "exp"
    folder.mkdir(parents=True)
    (folder / "session.json").write_text("{}")
    with hold(folder, "train") as holder:
        found = refused_here(["resume", str(folder)], capsys, holder, "train")
        assert found["rest"] == "wait or try again when it is done"
    assert sorted(os.listdir(folder)) == ["session.json"]


def test_a_ray_sweep_stops_while_the_same_sweep_runs(small_set: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("ray")
    from pipeline.sweeps import ray_sweep

    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(small_set)}, "train": {"project": "runs", "epochs": 1}}))
    argv = ["sweep", str(config), "--engine", "ray", "--grid", "model.freeze=null,10"]

    class Seen(Exception):
        pass

    seen: list[Path] = []

    def spy(folder: Path, *args: object) -> object:  # where the sweep keeps its state, without starting it
        seen.append(folder)
        raise Seen

    with monkeypatch.context() as patched:
        patched.setattr(ray_sweep, "writer_lock", spy)
        with pytest.raises(Seen):
            cli.main(["-v", *argv])  # -v: the exception itself, not its one line
    with hold(seen[0], "sweep") as holder:
        found = refused_here(argv, capsys, holder, "sweep")
        assert found["rest"] == "wait or choose another --name"
    assert not (tmp_path / "mlflow.db").exists()  # refused before the parent run was made
