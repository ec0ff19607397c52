"""The model facts and messages of the diagnosis, the recorder's files (diagnosis.json among them), heatmaps, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.config import GradientsConfig
from pipeline.training.diagnosis import DEAD_LAYER, FROZEN, NONFINITE, EpochRecord, Finding, ModelFacts, diagnose
from pipeline.training.errors import NonFiniteGradients
from pipeline.training.gradient_health import message, model_facts
from pipeline.training.gradient_recorder import GradientRecorder
from pipeline.training.gradient_report import HeatmapPainter, draw_heatmaps, log10_matrix
from pipeline.training.gradients import STATS, EpochGradients
from tests.helpers.tiny_network import Tiny, batch, loss_of

GROUPS = ["model.0.conv", "model.1.conv", "model.2.conv", "model.3.conv"]


def epoch_of(
    n: int, norms: list[float], total_max: float = 50.0, nonfinite_steps: int = 0, steps: int = 10
) -> EpochGradients:
    values = {stat: {r: [1.0] * len(GROUPS) for r in ("mean", "max", "last")} for stat in STATS}
    values["grad_norm"] = {r: list(norms) for r in ("mean", "max", "last")}
    values["grad_nonfinite"] = {r: [0.0, 0.01 if nonfinite_steps else 0.0, 0.0, 0.0] for r in ("mean", "max", "last")}
    totals = {
        "grad_total_norm": total_max / 2,
        "grad_total_norm_max": total_max,
        "grad_total_norm_last": total_max / 2,
        "grad_clipped_fraction": 1.0,
        "grad_steps": float(steps),
        "grad_nonfinite_steps": float(nonfinite_steps),
    }
    return EpochGradients(n, list(GROUPS), values, totals)


def test_model_facts_list_frozen_detached_and_the_head_in_the_recorders_names() -> None:
    model = Tiny()
    model.model[0].conv.weight.requires_grad_(False)  # the config froze block 0's conv
    facts = model_facts(model, "layer", amp=True)
    assert facts.frozen == {"model.0.conv": "config"} and facts.detached == [] and facts.amp
    assert model_facts(model, "block").frozen == {}  # block 0 still trains its norm: not frozen as a whole

    from ultralytics.nn.tasks import DetectionModel

    yolo26 = model_facts(DetectionModel("yolo26n.yaml", verbose=False), "layer")
    assert yolo26.head == "model.23" and yolo26.frozen == {}
    assert "model.23.one2one_cv2.0.0.conv" in yolo26.detached and all(".one2one_" in g for g in yolo26.detached)
    yolo11 = model_facts(DetectionModel("yolo11n.yaml", verbose=False), "layer")
    assert yolo11.frozen == {"model.23.dfl.conv": "dfl"} and yolo11.detached == []


def test_a_finding_reads_as_one_line_with_cause_epoch_evidence_remedy_and_layers() -> None:
    finding = diagnose([EpochRecord(epoch_of(3, [1.0] * 4, nonfinite_steps=1), loss=2.0)], ModelFacts())[0]
    text = message(finding)
    assert text.startswith("gradients: nonfinite in epoch 3: 1 of 10 sampled steps had NaN/inf gradients;")
    assert finding.remedy in text and text.endswith("layers: model.1.conv") and "\n" not in text
    many = Finding(1, DEAD_LAYER, "warning", [f"model.{i}.conv" for i in range(11)], {}, "r", "m")
    assert message(many).endswith("model.7.conv and 3 more")


def test_heatmap_is_an_image_of_layers_by_epochs(tmp_path: Path) -> None:
    history = [epoch_of(e, [10.0**e, 1.0, 0.0, math.nan]) for e in (1, 2, 3)]
    matrix = log10_matrix(history, "grad_norm")
    assert matrix.shape == (4, 3)
    assert matrix[0].tolist() == [1.0, 2.0, 3.0] and np.isnan(matrix[2]).all() and np.isnan(matrix[3]).all()
    path = draw_heatmaps(history, tmp_path / "heatmaps.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height >= 300 and image.width >= 600
        pixels = np.asarray(image.convert("RGB"))
    red = (pixels[..., 0] == 255) & (pixels[..., 1] == 0) & (pixels[..., 2] == 0)
    assert red.sum() > 100  # the zero and NaN rows are painted red, where a person looks first


def test_the_painter_draws_the_latest_request_and_close_waits_for_it(tmp_path: Path) -> None:
    drawn: list[Path] = []
    painter = HeatmapPainter(tmp_path / "heatmaps.png", drawn.append)
    for n in range(1, 4):
        painter.request([epoch_of(e, [1.0, 2.0, 3.0, 4.0]) for e in range(1, n + 1)])
    painter.close()
    assert drawn and drawn[-1] == tmp_path / "heatmaps.png" and len(drawn) <= 3
    assert not painter._thread.is_alive() and (tmp_path / "heatmaps.png").stat().st_size > 0


@pytest.fixture(autouse=True)
def seeded() -> None:
    """The tiny model's weights from one seed: some random inits of it are themselves a finding (gradients falling
    1.2-1.6 orders of magnitude from head to stem, or first steps of 0.35 of the weights), which a test of another
    cause must not meet by chance."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def painters_closed(monkeypatch: pytest.MonkeyPatch):
    """Every heatmap painter a test starts is closed after it: a picture still being drawn when the interpreter
    exits (or its folder is deleted) can abort the test process."""
    made: list[HeatmapPainter] = []
    start = HeatmapPainter.__init__

    def tracked(self: HeatmapPainter, *args, **kwargs) -> None:
        start(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(HeatmapPainter, "__init__", tracked)
    yield
    for painter in made:
        painter.close()


def train_epochs(recorder: GradientRecorder, model: torch.nn.Module, epochs: range, poison: int | None = None) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in epochs:
        recorder.begin_epoch()
        for seed in range(2):
            optimizer.zero_grad()
            loss_of(model, batch(seed)).backward()
            if epoch == poison and seed == 1:  # the last step, so the NaN does not spread to other layers
                model.model[1].conv.weight.grad[0, 0, 0, 0] = math.inf
            assert recorder.due()
            recorder.observe_gradients()
            optimizer.step()
            recorder.observe_update()
        recorder.end_epoch(epoch)


def test_recorder_writes_history_heatmaps_events_and_report(tmp_path: Path) -> None:
    model = Tiny()
    recorder = GradientRecorder(model, GradientsConfig(), tmp_path, resumed_epochs=0)
    train_epochs(recorder, model, range(1, 3), poison=2)
    report = json.loads(recorder.finish().read_text())

    assert {"history.jsonl", "events.jsonl", "heatmaps.png", "report.json", "diagnosis.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["cause"], e["layers"]) for e in events] == [(2, NONFINITE, ["model.1.conv"])]
    assert report["epochs"] == [1, 2] and report["health"] == "error" and report["causes"] == [NONFINITE]
    diagnosis = json.loads((tmp_path / "diagnosis.json").read_text())
    assert diagnosis["health"] == "error" and diagnosis["causes"] == [NONFINITE]
    assert diagnosis["epochs"] == {"1": [], "2": [events[0]]} and diagnosis["findings"][0]["first_epoch"] == 2
    assert recorder.tags() == {"gradients.health": "error", "gradients.causes": NONFINITE}
    assert list(report["groups"]) == recorder.monitor.groups.names
    assert len(report["groups"]["model.0.conv"]["grad_norm"]["mean"]) == 2
    assert report["groups"]["model.1.conv"]["grad_nonfinite"]["max"][1] == pytest.approx(1 / (4 * 4 * 9))
    assert report["numel"]["model.1.conv"] == 4 * 4 * 9


def test_stop_on_nonfinite_raises_one_line(tmp_path: Path) -> None:
    model = Tiny()
    recorder = GradientRecorder(model, GradientsConfig(stop_on_nonfinite=True), tmp_path)
    with pytest.raises(
        NonFiniteGradients, match=r"^gradients: nonfinite in epoch 1: .*model\.1\.conv.*stop_on_nonfinite\)$"
    ):
        train_epochs(recorder, model, range(1, 2), poison=1)


def test_a_resumed_recorder_keeps_the_epochs_its_checkpoint_covers(tmp_path: Path) -> None:
    model = Tiny()
    first = GradientRecorder(model, GradientsConfig(), tmp_path)
    train_epochs(first, model, range(1, 4))  # epochs 1-3 recorded; say the checkpoint holds epoch 2
    first.end_epoch(4, loss=1.0)  # nothing sampled since the last epoch: no record
    resumed = GradientRecorder(model, GradientsConfig(), tmp_path, resumed_epochs=2)
    assert sorted(resumed.history) == [1, 2] and sorted(resumed.records) == [1, 2]
    train_epochs(resumed, model, range(3, 5))
    assert sorted(resumed.history) == [1, 2, 3, 4]
    fresh = GradientRecorder(model, GradientsConfig(), tmp_path, resumed_epochs=0)  # a new training, same folder
    assert fresh.history == {} and not (tmp_path / "history.jsonl").exists()


def test_a_redone_epoch_is_read_once_and_what_its_first_attempt_found_stays(tmp_path: Path) -> None:
    model = Tiny()
    model.model[2].requires_grad_(False)
    recorder = GradientRecorder(model, GradientsConfig(), tmp_path)
    train_epochs(recorder, model, range(1, 2))
    last = {k: v.clone() for k, v in model.state_dict().items()}
    train_epochs(recorder, model, range(2, 3), poison=2)
    model.load_state_dict(last)  # ultralytics reloads last.pt and redoes epoch 2
    train_epochs(recorder, model, range(2, 3))
    assert sorted(recorder.records) == [1, 2]
    diagnosis = recorder.diagnosis()
    assert [f["cause"] for f in diagnosis["epochs"]["2"]] == [NONFINITE]  # the redo was clean; the NaN happened
    assert diagnosis["causes"] == [NONFINITE, FROZEN] and diagnosis["health"] == "error"
    assert [f["cause"] for f in diagnosis["epochs"]["1"]] == [FROZEN]  # model.2's weight, said once


class Uploads:
    """A tracker that keeps what it is handed."""

    def __init__(self) -> None:
        self.artifacts: list[str] = []
        self.tags: list[dict] = []

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(f"{artifact_path}/{Path(path).name}")

    def set_tags(self, tags: dict) -> None:
        self.tags.append(tags)


def test_files_rewritten_each_epoch_go_to_mlflow_after_the_first_then_at_most_every_interval_and_at_the_end(
    tmp_path: Path,
) -> None:
    model, tracker = Tiny(), Uploads()
    recorder = GradientRecorder(model, GradientsConfig(heatmaps=False), tmp_path, tracker=tracker)
    train_epochs(recorder, model, range(1, 4))  # three quick epochs: well within the interval
    assert tracker.artifacts.count("gradients/table.parquet") == 1  # the first epoch's
    assert tracker.artifacts.count("gradients/diagnosis.json") == 1
    recorder.finish()
    assert tracker.artifacts.count("gradients/table.parquet") == 2  # ... and the last version
    assert tracker.artifacts.count("gradients/diagnosis.json") == 2
    assert tracker.artifacts.count("gradients/report.json") == 1
    assert len(pd.read_parquet(tmp_path / "table.parquet")["epoch"].unique()) == 3  # the file itself: every epoch
    assert tracker.tags and "gradients.health" in tracker.tags[-1]  # tags are records: never held back
