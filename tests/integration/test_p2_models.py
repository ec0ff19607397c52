"""Stride-4 (P2) heads end to end: the names resolve offline, a tiny training runs, and the gradient doctor counts
and names four head levels (P2-P5: strides 4, 8, 16, 32)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.training import train
from pipeline.training.assignment import assignment_from_json, level_metrics
from pipeline.training.weights import OWN_ARCHITECTURES, resolve_weights
from tests.helpers.configs import tiny_config

P2_MODELS = ("yolov8n-p2.yaml", "yolo26n-p2.yaml", "yolo11n-p2.yaml")  # ultralytics' two, and ours


@pytest.mark.parametrize("name", P2_MODELS)
def test_p2_architectures_resolve_offline(name: str) -> None:
    resolved = resolve_weights(name)
    assert (resolved.pretrained, resolved.note) == (False, "")
    if name.startswith("yolo11"):  # pipeline/models/yolo11-p2.yaml, named with its scale for ultralytics
        assert resolved.model == str(OWN_ARCHITECTURES / name) and (OWN_ARCHITECTURES / "yolo11-p2.yaml").is_file()
    else:
        assert resolved.model == name


def test_our_yolo11_p2_is_yolo11_with_a_stride_4_level() -> None:
    from ultralytics.nn.tasks import DetectionModel

    ours = DetectionModel(resolve_weights("yolo11n-p2.yaml").model, nc=3, verbose=False)
    plain = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    assert ours.stride.tolist() == [4, 8, 16, 32] and ours.yaml["scale"] == "n"
    assert ours.model[10].__class__.__name__ == plain.model[10].__class__.__name__ == "C2PSA"  # YOLO11's backbone
    assert [p.shape for p in ours.model[:11].parameters()] == [p.shape for p in plain.model[:11].parameters()]
    small = DetectionModel(str(OWN_ARCHITECTURES / "yolo11s-p2.yaml"), nc=3, verbose=False)
    assert small.yaml["scale"] == "s" and sum(p.numel() for p in small.parameters()) > sum(
        p.numel() for p in ours.parameters()
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", P2_MODELS)
def test_a_tiny_p2_training_counts_and_names_four_levels(synth_data: Path, tmp_path: Path, name: str) -> None:
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        model={"weights": name},
        train={"epochs": 1, "plots": False},
        tracking={"enabled": False},
    )
    result = train(config)
    assert result.best_weights is not None and result.best_weights.is_file()

    diagnosis = json.loads((result.save_dir / "gradients" / "diagnosis.json").read_text())
    assert diagnosis["health"] in {"ok", "info"}, diagnosis["findings"]
    branches = diagnosis["inputs"]["1"]["assignment"]  # YOLO26: its one-to-one branch too
    assert set(branches) == ({"", "one2one"} if name.startswith("yolo26") else {""})
    assert all(b["strides"] == [4, 8, 16, 32] and b["images"] == 96 for b in branches.values())
    main = branches[""]
    assert len(main["positives"]) == len(main["weight"]) == len(main["size_min"]) == 4
    assert main["positives"][0] > 0  # 64-px images of small defects: the stride-4 level gets targets
    metrics = level_metrics(assignment_from_json(branches))
    assert {key for key in metrics if "one2one" not in key} == {
        f"positives_per_image.stride{s}" for s in (4, 8, 16, 32)
    }
    finding = next((f for f in diagnosis["findings"] if f["cause"] == "idle-level"), None)
    if finding is not None:  # an idle level is named by its stride and its own box branch, the head's 4th too
        levels = [main["strides"].index(s) for s in finding["evidence"]["idle_strides"]]
        assert finding["layers"] and all(
            int(re.search(r"cv2\.(\d+)", layer).group(1)) in levels for layer in finding["layers"]
        )
        assert set(finding["evidence"]["positives_per_image"]) == {"stride4", "stride8", "stride16", "stride32"}
