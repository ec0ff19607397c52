"""Each of the trainer's callbacks alone, on a stand-in trainer holding only what the callback reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pipeline.checkpoints import IMAGE_SIDE_ATTRIBUTE, TILE_ATTRIBUTE
from pipeline.config import GradientsConfig, build_config
from pipeline.drift import DIGEST_TAG, FILENAME, TRAINING, Baseline, Collector, ImageStatistics
from pipeline.training.callbacks import (
    Callback,
    EpochListening,
    FinalStage,
    GradientRecording,
    PositiveCounting,
    PredictFacts,
    Tracking,
)
from pipeline.training.callbacks.base import FAILED, FINISHED, KILLED, ended_as
from pipeline.training.callbacks.gradients import epoch_loss
from pipeline.training.callbacks.tracking import PENDING
from pipeline.training.epoch_listener import STOPPED_BY_TAG, EpochReport, StoppedEarly
from pipeline.training.errors import NonFiniteGradients
from pipeline.training.session import Session
from tests.helpers.tiny_network import Tiny, batch, loss_of

# ---- stand-ins ---------------------------------------------------------------------------------------------


class FakeTracker:
    """Records every call the tracking makes; ``models`` are the spool's journaled models."""

    def __init__(self, models: int = 0):
        self.calls: list[tuple] = []
        self.run_id = "run-1"
        self.spool = SimpleNamespace(records=lambda kind: ["model"] * models if kind == "model" else [])

    def start(self, tags: dict | None = None) -> None:
        self.calls.append(("start", tags))

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append(("metrics", step, metrics))

    def log_model(self, weights: Path, step: int, extra_files: list, metadata: dict) -> None:
        self.calls.append(("model", weights.name, step, [Path(f).name for f in extra_files], metadata))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.calls.append(("artifact", Path(path).name, folder))

    def set_tags(self, tags: dict) -> None:
        self.calls.append(("tags", tags))

    def finish(self, status: str, timeout_s: float) -> None:
        self.calls.append(("finish", status, timeout_s))

    def close(self) -> None:
        self.calls.append(("close",))

    def of(self, kind: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == kind]


def session(tmp_path: Path, tracker: Any = None, **sections: Any) -> Session:
    config = build_config({"tracking": {"system_metrics": False}, **sections})
    made = Session(config, save_dir=tmp_path, dataset={"image_side": 800})
    if tracker is not None:
        made.tracker = lambda: tracker  # type: ignore[method-assign]
    return made


def trainer(tmp_path: Path, **attributes: Any) -> SimpleNamespace:
    weights = tmp_path / "weights"
    weights.mkdir(exist_ok=True)
    base = {
        "save_dir": tmp_path,
        "resume": False,
        "start_epoch": 0,
        "epoch": 0,
        "epochs": 3,
        "stop": False,
        "final_stage_only": False,
        "fitness": 0.25,
        "epoch_time_start": 0.0,
        "gradients": None,
        "validator": None,
        "tracker": None,
        "metrics": {"metrics/mAP50-95(B)": 0.2},
        "data": {"names": {0: "scratch"}},
        "best": weights / "best.pt",
        "last": weights / "last.pt",
        "args": SimpleNamespace(imgsz=640, plots=False),
    }
    return SimpleNamespace(**{**base, **attributes})


# ---- the interface -----------------------------------------------------------------------------------------


def test_every_hook_defaults_to_nothing() -> None:
    class Counting(Callback):
        def __init__(self):
            self.seen: list[str] = []

        def on_train_epoch_end(self, trainer: Any) -> None:
            self.seen.append("epoch end")

    callback, t = Counting(), object()
    assert callback.on_fit_start(t) is None and callback.on_setup(t) is None
    assert callback.on_train_epoch_start(t) is None and callback.on_fit_epoch_end(t) is None
    assert callback.on_metrics_saved(t, {"a": 1.0}) is None and callback.on_checkpoint_saved(t) is None
    assert callback.on_fit_end(t, FINISHED, None) is None
    callback.on_train_epoch_end(t)
    assert callback.seen == ["epoch end"]


def test_how_a_training_ended() -> None:
    assert ended_as(None) == FINISHED
    assert ended_as(StoppedEarly("asha", 2)) == KILLED
    assert ended_as(KeyboardInterrupt()) == KILLED
    assert ended_as(NonFiniteGradients("nan")) == FAILED
    assert ended_as(RuntimeError("out of memory")) == FAILED


def test_the_trainer_runs_the_hooks_in_order_and_ends_them_in_reverse() -> None:
    from pipeline.training.trainer import PipelineTrainer

    seen: list[str] = []

    class Named(Callback):
        def __init__(self, name: str):
            self.name = name

        def on_fit_start(self, trainer: Any) -> None:
            seen.append(f"start {self.name}")

        def on_fit_end(self, trainer: Any, status: str, error: BaseException | None) -> None:
            seen.append(f"end {self.name} {status} {type(error).__name__}")

    def stopped(trainer: Any) -> None:
        raise StoppedEarly("asha", 1)

    stand_in = SimpleNamespace(pipeline_callbacks=[Named("a"), Named("b")], final_stage=SimpleNamespace(enabled=True))
    stand_in.final_stage.run = stopped
    stand_in._hooks = lambda hook, *args: PipelineTrainer._hooks(stand_in, hook, *args)
    with pytest.raises(StoppedEarly):
        PipelineTrainer._do_train(stand_in)  # the final stage alone: no ultralytics loop
    assert seen == ["start a", "start b", "end b KILLED StoppedEarly", "end a KILLED StoppedEarly"]


# ---- tracking ----------------------------------------------------------------------------------------------


def test_an_epoch_record_is_journaled_once_its_checkpoint_is_written(tmp_path: Path) -> None:
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake))
    gradients = SimpleNamespace(metrics=lambda: {"grad_total_norm": 3.0})
    t = trainer(tmp_path, resume=True, gradients=gradients)
    tracking.on_fit_start(t)
    assert fake.of("start") == [("start", {"pipeline.resumed": "true"})]
    tracking.on_setup(t)  # nothing pending: nothing journaled
    assert fake.of("metrics") == []

    tracking.on_metrics_saved(t, {"metrics/mAP50-95(B)": 0.5, "val/box_loss": 1.25})
    pending = json.loads((tmp_path / PENDING).read_text())
    assert pending["epoch"] == 0 and fake.of("metrics") == []  # pending until the checkpoint
    assert pending["metrics"]["mAP50_95"] == 0.5 and pending["metrics"]["val.box_loss"] == 1.25
    assert pending["metrics"]["fitness"] == 0.25 and pending["metrics"]["grad_total_norm"] == 3.0

    tracking.on_checkpoint_saved(t)
    ((_, step, metrics),) = fake.of("metrics")
    assert step == 1 and metrics == pending["metrics"]
    assert not (tmp_path / PENDING).exists() and fake.of("model") == []  # not the last epoch: no model yet


@pytest.mark.parametrize(("pending_epoch", "journaled"), [(1, True), (2, False)])
def test_a_resume_keeps_a_pending_record_only_if_its_checkpoint_has_the_epoch(
    tmp_path: Path, pending_epoch: int, journaled: bool
) -> None:
    (tmp_path / PENDING).write_text(json.dumps({"epoch": pending_epoch, "metrics": {"mAP50": 0.1}}))
    fake = FakeTracker(models=0)
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(tmp_path, resume=True, start_epoch=2)  # last.pt holds epochs 0 and 1
    tracking.on_fit_start(t)
    tracking.on_setup(t)
    assert fake.of("metrics") == ([("metrics", pending_epoch + 1, {"mAP50": 0.1})] if journaled else [])
    assert not (tmp_path / PENDING).exists()
    assert fake.of("model") == []  # not a final stage


def test_the_last_checkpoint_journals_the_model_with_what_predict_needs(tmp_path: Path) -> None:
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake, data={"tile": {"size": 320, "overlap": 0.25}}))
    t = trainer(tmp_path, epoch=2, stop=True)
    t.last.write_bytes(b"weights")  # no best.pt: no epoch had a finite fitness
    tracking.on_fit_start(t)
    tracking.on_checkpoint_saved(t)
    metadata = {"imgsz": 640, "training_image_side": 800, "training_tile": {"size": 320, "overlap": 0.25}}
    assert fake.of("model") == [("model", "last.pt", 3, ["config.yaml"], metadata)]


@pytest.mark.parametrize(("models", "journaled"), [(0, True), (1, False)])
def test_a_final_stage_journals_the_model_the_kill_left_unjournaled(
    tmp_path: Path, models: int, journaled: bool
) -> None:
    fake = FakeTracker(models=models)
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(tmp_path, resume=True, start_epoch=3, final_stage_only=True)
    t.best.write_bytes(b"weights")
    tracking.on_fit_start(t)
    tracking.on_setup(t)
    assert [(c[1], c[2]) for c in fake.of("model")] == ([("best.pt", 3)] if journaled else [])


def test_a_stopped_training_ends_killed_with_who_stopped_it(tmp_path: Path) -> None:
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(tmp_path)
    (tmp_path / "results.csv").write_text("epoch\n1\n")
    tracking.on_fit_start(t)
    tracking.on_fit_end(t, KILLED, StoppedEarly("asha", 1))
    assert fake.calls[1:] == [("tags", {STOPPED_BY_TAG: "asha"}), ("finish", KILLED, 30.0)]  # no final artifacts
    assert tracking.tracker is None


def test_a_finished_training_logs_its_final_artifacts(tmp_path: Path) -> None:
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(tmp_path, epoch=2)
    (tmp_path / "results.csv").write_text("epoch\n1\n")
    tracking.on_fit_start(t)
    tracking.on_fit_end(t, FINISHED, None)
    assert fake.calls[1:] == [("artifact", "results.csv", None), ("finish", FINISHED, 30.0)]


def _saved_baseline(weights: Path) -> Baseline:
    collector = Collector({"scratch": 0.25})
    collector.add(ImageStatistics(100.0, 20.0, 500.0, 0.0, 0.0, 64.0, 64.0), [], None, name="a.png")
    baseline = Baseline.from_collector(collector, model_sha256="abc", split="val", extra={"origin": TRAINING})
    baseline.save(weights / FILENAME)
    return baseline


def test_a_finished_training_records_its_drift_baseline_and_journals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.training import drift_baseline

    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(
        tmp_path, epoch=2, device=torch.device("cpu"), args=SimpleNamespace(imgsz=64, plots=False, data="d.yaml")
    )
    t.best.write_bytes(b"weights")
    asked: list[tuple] = []

    def record(weights: Path, data: str, device: str) -> Baseline:
        asked.append((weights, data, device))
        return _saved_baseline(weights.parent)

    monkeypatch.setattr(drift_baseline, "record_baseline", record)
    tracking.on_fit_start(t)
    tracking.on_fit_end(t, FINISHED, None)
    assert asked == [(t.best, "d.yaml", "cpu")]
    digest = Baseline.load(t.best.with_name(FILENAME)).digest()
    assert fake.of("artifact") == [("artifact", FILENAME, "drift")] and fake.of("tags") == [
        ("tags", {DIGEST_TAG: digest})
    ]
    assert fake.calls[-1] == ("finish", FINISHED, 30.0)

    # Not asked for, not finished, or not the process that tracks (another DDP rank): nothing is predicted.
    asked.clear()
    for config, status, started in (
        ({"drift_baseline": False}, FINISHED, True),
        ({}, KILLED, True),
        ({}, FINISHED, False),
    ):
        other = Tracking(session(tmp_path, FakeTracker(), train=config))
        if started:
            other.on_fit_start(t)
        other.on_fit_end(t, status, None if status == FINISHED else StoppedEarly("asha", 1))
    assert asked == []


def test_a_baseline_that_cannot_be_made_is_a_warning_not_a_failed_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.training import drift_baseline

    def broken(weights: Path, data: str, device: str) -> None:
        raise OSError("disk full\nsecond line")

    monkeypatch.setattr(drift_baseline, "record_baseline", broken)
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake))
    t = trainer(tmp_path, device=torch.device("cpu"), args=SimpleNamespace(imgsz=64, plots=False, data="d.yaml"))
    t.best.write_bytes(b"weights")
    tracking.on_fit_start(t)
    with caplog.at_level(logging.WARNING, "pipeline.training"):
        tracking.on_fit_end(t, FINISHED, None)
    assert [r.getMessage() for r in caplog.records] == ["drift baseline: not recorded (OSError: disk full)"]
    assert fake.of("finish") == [("finish", FINISHED, 30.0)] and not fake.of("tags")
    # untracked, the same: the warning, and the training ends as it would
    untracked = Tracking(session(tmp_path, None, tracking={"enabled": False}))
    untracked.on_fit_start(t)
    untracked.on_fit_end(t, FINISHED, None)


def test_the_baseline_runs_on_the_training_device() -> None:
    from pipeline.training.drift_baseline import predict_device

    assert predict_device(torch.device("cpu")) == "cpu" and predict_device(torch.device("cuda", 1)) == "1"
    assert predict_device(torch.device("cuda")) == "0" and predict_device(torch.device("mps")) == "mps"


def test_a_tracker_that_cannot_start_costs_the_tracking_not_the_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FakeTracker):
        def start(self, tags: dict | None = None) -> None:
            raise ConnectionError("refused\nsecond line")

    broken = Broken()
    tracking = Tracking(session(tmp_path, broken))
    t = trainer(tmp_path)
    with caplog.at_level(logging.WARNING, "pipeline.training"):
        tracking.on_fit_start(t)
    assert tracking.tracker is None and broken.of("close") == [("close",)]
    assert "tracking: could not start (ConnectionError: refused)" in caplog.text
    tracking.on_metrics_saved(t, {"metrics/mAP50(B)": 0.1})  # untracked: every hook is a no-op
    tracking.on_fit_end(t, FINISHED, None)
    assert not (tmp_path / PENDING).exists()


def test_tracking_off_starts_nothing(tmp_path: Path) -> None:
    fake = FakeTracker()
    tracking = Tracking(session(tmp_path, fake, tracking={"enabled": False}))
    tracking.on_fit_start(trainer(tmp_path))
    assert tracking.tracker is None and fake.calls == []
    assert Tracking(None).on_fit_start(trainer(tmp_path)) is None


# ---- positives ---------------------------------------------------------------------------------------------


class FakeCounter:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.calls: list[Any] = []

    def attach(self, criterion: Any) -> bool:
        if self.fail:
            raise RuntimeError("no assigner")
        self.calls.append(("attach", criterion))
        return True

    def begin_epoch(self) -> None:
        self.calls.append("begin")

    def end_epoch(self) -> dict:
        self.calls.append("end")
        return {"": "counts"}


def test_positives_are_counted_while_the_gradients_are_recorded(tmp_path: Path) -> None:
    built = []
    model = SimpleNamespace(criterion=None, init_criterion=lambda: built.append(1) or "criterion")
    counter = FakeCounter()
    positives = PositiveCounting(counter)
    t = trainer(tmp_path, model=model, gradients=object())
    positives.on_train_epoch_start(t)
    assert model.criterion == "criterion" and built == [1]  # built now, as ultralytics would at the first batch
    positives.on_train_epoch_end(t)
    positives.on_train_epoch_start(t)  # the criterion is there: not built again
    assert built == [1] and counter.calls == [("attach", "criterion"), "begin", "end", ("attach", "criterion"), "begin"]
    assert positives.counts is None  # an epoch begun has no counts yet
    positives.on_train_epoch_end(t)
    assert positives.counts == {"": "counts"}


def test_positives_are_not_counted_without_gradients_and_a_failure_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = FakeCounter()
    positives = PositiveCounting(counter)
    t = trainer(tmp_path, model=SimpleNamespace(criterion="criterion"))
    positives.on_train_epoch_start(t)
    positives.on_train_epoch_end(t)
    assert counter.calls == [] and positives.counts is None
    failing = PositiveCounting(FakeCounter(fail=True))
    with caplog.at_level(logging.WARNING, "pipeline.training"):
        failing.on_train_epoch_start(trainer(tmp_path, model=SimpleNamespace(criterion="c"), gradients=object()))
    assert "gradients: positives per level not counted (RuntimeError: no assigner)" in caplog.text


# ---- gradients ---------------------------------------------------------------------------------------------


def test_the_gradient_record_is_made_at_setup_and_reduced_per_epoch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    positives = SimpleNamespace(counts=None)
    recording = GradientRecording(GradientsConfig(heatmaps=False), positives)  # type: ignore[arg-type]
    tracker = FakeTracker()
    t = trainer(
        tmp_path,
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        tracker=tracker,
        tloss=torch.tensor([1.0, 2.0, 0.5]),
    )
    recording.on_setup(t)
    recorder = recording.recorder
    assert recorder is not None and recorder.folder == tmp_path / "gradients" and recorder.tracker is tracker
    recording.on_train_epoch_start(t)
    loss_of(model, batch()).backward()
    recorder.observe_gradients()
    optimizer.step()
    recorder.observe_update()
    recording.on_train_epoch_end(t)
    assert list(recorder.history) == [1]  # the 1-based epoch
    assert recorder.records[1].loss == pytest.approx(3.5)  # the sum of the epoch's mean loss items
    assert len((tmp_path / "gradients" / "history.jsonl").read_text().splitlines()) == 1
    assert ("artifact", "table.parquet", "gradients") in tracker.calls  # the record's files go to the run
    recording.on_fit_end(t, FINISHED, None)
    assert (tmp_path / "gradients" / "report.json").is_file()


def test_no_gradient_record_when_it_is_off(tmp_path: Path) -> None:
    for recording in (GradientRecording(GradientsConfig(enabled=False)), GradientRecording(None)):
        recording.on_setup(trainer(tmp_path))
        recording.on_train_epoch_start(trainer(tmp_path))
        recording.on_train_epoch_end(trainer(tmp_path))  # nothing to reduce, nothing raised
        assert recording.recorder is None


class FakeRecorder:
    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.calls: list[tuple] = []

    def begin_epoch(self) -> None:
        self.calls.append(("begin",))

    def end_epoch(self, epoch: int, loss: float | None, assignment: Any) -> None:
        self.calls.append(("end", epoch, loss, assignment))
        if isinstance(self.fail, NonFiniteGradients):
            raise self.fail

    def finish(self) -> None:
        self.calls.append(("finish",))
        if self.fail is not None:
            raise self.fail


def test_the_epoch_end_hands_the_positives_and_the_loss_to_the_record(tmp_path: Path) -> None:
    recording = GradientRecording(GradientsConfig(), SimpleNamespace(counts={"": "counts"}))  # type: ignore[arg-type]
    recording.recorder = FakeRecorder()  # type: ignore[assignment]
    recording.on_train_epoch_end(trainer(tmp_path, epoch=4, tloss={"box": torch.tensor(1.0), "cls": None}))
    assert recording.recorder.calls == [("end", 5, 1.0, {"": "counts"})]


@pytest.mark.parametrize("checkpoint", [False, True])
def test_non_finite_gradients_stop_the_training_naming_the_last_good_checkpoint(
    tmp_path: Path, checkpoint: bool
) -> None:
    recording = GradientRecording(GradientsConfig(stop_on_nonfinite=True))
    recording.recorder = FakeRecorder(NonFiniteGradients("gradients: nonfinite in epoch 2"))  # type: ignore[assignment]
    t = trainer(tmp_path, epoch=1, tloss=torch.tensor(1.0))
    if checkpoint:
        t.last.write_bytes(b"weights")
    with pytest.raises(NonFiniteGradients) as raised:
        recording.on_train_epoch_end(t)
    kept = (
        f"the last good checkpoint is {t.last} (epoch 1)" if checkpoint else "no checkpoint was saved before this epoch"
    )
    assert str(raised.value) == f"gradients: nonfinite in epoch 2; {kept}"


def test_under_ddp_every_rank_stops_as_rank_0_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list] = []

    def broadcast(decision: list, src: int) -> None:  # rank 0 found non-finite gradients; this rank did not
        sent.append(list(decision))
        decision[0] = "gradients: nonfinite in epoch 1 (rank 0)"

    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast)
    recording = GradientRecording(GradientsConfig(), rank=1)  # a rank without a recorder
    with pytest.raises(NonFiniteGradients, match=r"\(rank 0\)"):
        recording.on_train_epoch_end(trainer(tmp_path))
    assert sent == [[None]]


def test_a_report_that_fails_does_not_hide_how_the_training_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recording = GradientRecording(GradientsConfig())
    recording.recorder = FakeRecorder(OSError("disk full"))  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "pipeline.training"):
        recording.on_fit_end(trainer(tmp_path), FAILED, RuntimeError("boom"))
    assert recording.recorder.calls == [("finish",)]
    assert "gradients: could not write the report (OSError: disk full)" in caplog.text


def test_the_epoch_loss_sums_the_loss_items() -> None:
    assert epoch_loss(torch.tensor([1.0, 2.0, 0.5])) == pytest.approx(3.5)
    assert epoch_loss({"box": torch.tensor(1.0), "cls": 2.0, "dfl": None}) == pytest.approx(3.0)
    assert epoch_loss({}) is None


# ---- the epoch listener ------------------------------------------------------------------------------------


def test_the_listener_hears_each_epoch_but_the_last_and_may_stop_the_training(tmp_path: Path) -> None:
    heard: list[EpochReport] = []
    answers = iter([None, "asha"])
    listening = EpochListening(lambda report: heard.append(report) or next(answers))
    tracked = SimpleNamespace(run_id="run-7")
    listening.on_fit_epoch_end(trainer(tmp_path, epoch=0, epochs=4, tracker=tracked))
    with pytest.raises(StoppedEarly) as raised:
        listening.on_fit_epoch_end(trainer(tmp_path, epoch=1, epochs=4))
    assert (raised.value.stopped_by, raised.value.epoch) == ("asha", 2)
    assert [(r.epoch, r.epochs, r.run_id) for r in heard] == [(1, 4, "run-7"), (2, 4, None)]
    assert heard[0].metrics == {"mAP50_95": 0.2, "fitness": 0.25} and heard[0].save_dir == tmp_path
    listening.on_fit_epoch_end(trainer(tmp_path, epoch=3, epochs=4))  # the last epoch
    listening.on_fit_epoch_end(trainer(tmp_path, epoch=4, epochs=4))  # the final validation
    listening.on_fit_epoch_end(trainer(tmp_path, epoch=1, epochs=4, stop=True))  # stopping anyway
    assert len(heard) == 2


# ---- the final stage ---------------------------------------------------------------------------------------


def test_the_final_stage_loads_the_checkpoint_and_runs_what_follows_the_last_epoch(tmp_path: Path) -> None:
    calls: list[Any] = []
    loader = SimpleNamespace(close=lambda: calls.append("close loader"))
    t = trainer(tmp_path, epoch=0, train_loader=loader, test_loader=None, args=SimpleNamespace(plots=True))
    t._load_checkpoint_state = lambda ckpt: calls.append(("state", ckpt["epoch"]))
    stage = FinalStage(enabled=True)
    t._setup_train = lambda: (calls.append("setup"), stage.on_setup(t))
    t.final_eval = lambda: calls.append(("final_eval", t.epoch, t.stop))
    t.plot_metrics = lambda: calls.append("plots")
    t.run_callbacks = lambda event: calls.append(event)
    t._clear_memory = lambda: calls.append("clear")
    stage.load(t, {"epoch": 2})
    assert t.start_epoch == 3
    stage.run(t)
    assert calls == [("state", 2), "setup", ("final_eval", 2, True), "plots", "on_train_end", "clear", "close loader"]


def test_a_disabled_final_stage_leaves_the_epochs_alone(tmp_path: Path) -> None:
    t = trainer(tmp_path, start_epoch=2, epoch=0)
    FinalStage().on_setup(t)
    assert (t.epoch, t.stop) == (0, False)


# ---- what predict reads from the weights -------------------------------------------------------------------


def test_the_image_side_and_the_tiles_go_into_the_model_and_its_ema(tmp_path: Path) -> None:
    model, ema = SimpleNamespace(), SimpleNamespace()
    t = trainer(tmp_path, model=model, ema=SimpleNamespace(ema=ema))
    PredictFacts(session(tmp_path, data={"tile": {"size": 320, "overlap": 0.25}})).on_setup(t)
    for network in (model, ema):
        assert getattr(network, IMAGE_SIDE_ATTRIBUTE) == 800
        assert getattr(network, TILE_ATTRIBUTE) == {"size": 320, "overlap": 0.25}
    untiled = SimpleNamespace()
    PredictFacts(session(tmp_path)).on_setup(trainer(tmp_path, model=untiled, ema=SimpleNamespace(ema=untiled)))
    assert getattr(untiled, IMAGE_SIDE_ATTRIBUTE) == 800 and not hasattr(untiled, TILE_ATTRIBUTE)
