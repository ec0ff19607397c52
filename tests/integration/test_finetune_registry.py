"""Fine-tuning from the MLflow registry on a real server: `model.weights: models:/name@alias` starts from that
model's weights, the run records its parent (pinned to the version), and a data set with other classes trains
with one line saying what ultralytics made of the parent's class layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import read_checkpoint
from pipeline.training.run import TrainResult, train
from pipeline.training.weights import resolve_weights
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow
NAME, ALIAS = "finetune-registry-defects", "champion"
MAP50 = "metrics/mAP50(B)"


@pytest.fixture(scope="module")
def parent(downscaled_training: TrainResult, mlflow_server) -> tuple[str, str]:
    """`downscaled_training`'s model registered as NAME@ALIAS: (its URI, the version)."""
    from pipeline.tracking.registry import register_model

    version = register_model(downscaled_training.run_id, NAME, ALIAS, {}, mlflow_server.uri)
    return f"models:/{NAME}@{ALIAS}", version


def recipe(weights: str, mlflow_server, **tracking) -> dict:
    """`weak_training`'s recipe (1 epoch at 64 px), from ``weights``, in an experiment of its own, at a fine-tuning
    learning rate: AdamW's first steps move every weight by about lr0 whatever its gradient, and at the 0.002 that
    suits a start from scratch one epoch without warmup wipes out what the parent learned (mAP50 0.25 -> 0.004)."""
    return {
        "model": {"weights": weights},
        "train": {"epochs": 1, "batch": 8, "optimizer": "AdamW", "lr0": 0.0002, "warmup_epochs": 0},
        "tracking": {"uri": mlflow_server.uri, "experiment": "finetune-registry", "system_metrics": False, **tracking},
        "gradients": {"enabled": False},
    }


def test_finetune_from_an_alias_starts_from_the_parent(
    parent: tuple[str, str],
    downscaled_data: Path,
    downscaled_training: TrainResult,
    weak_training: TrainResult,
    mlflow_server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, version = parent
    sections = recipe(uri, mlflow_server)
    result = train(tiny_config(downscaled_data, tmp_path / "runs", **sections))

    tags = MlflowClient(mlflow_server.uri).get_run(result.run_id).data.tags
    assert tags["pipeline.parent_model"] == uri
    assert tags["pipeline.parent_model_version"] == f"models:/{NAME}/{version}"
    assert tags["pipeline.parent_run"] == downscaled_training.run_id
    assert "pipeline.weights_fallback" not in tags

    # From the parent's weights, the first epoch finds what one epoch from scratch does not.
    tuned, scratch = result.epochs[0][MAP50], weak_training.epochs[0][MAP50]
    assert tuned >= scratch + 0.1 and tuned >= 2 * scratch, (tuned, scratch)

    lineage = f"fine-tuned from {uri} (version {version}, run {downscaled_training.run_id})"
    assert lineage in result.notes
    transferred = [note for note in result.notes if note.startswith("model.weights: ultralytics: Transferred ")]
    assert len(transferred) == 1, result.notes
    counted = transferred[0].split("Transferred ", 1)[1].split(" ", 1)[0].split("/")
    assert counted[0] == counted[1], transferred  # same classes: every tensor comes from the parent
    assert not any("classes" in note for note in result.notes)  # no class-change line

    from pipeline.cli.train import _print_training

    _print_training(result)
    assert f"note: {lineage}\n" in capsys.readouterr().out


def two_class_data(downscaled_data: Path, out: Path, per_split: dict[str, int]) -> Path:
    """A slice of `downscaled_data` with 2 classes: scratch kept, pit renamed dent, patch boxes dropped."""
    source = downscaled_data.parent
    for split, count in per_split.items():
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for image in sorted((source / "images" / split).iterdir())[:count]:
            shutil.copy(image, out / "images" / split / image.name)
            label = source / "labels" / split / f"{image.stem}.txt"
            lines = label.read_text().splitlines() if label.exists() else []
            kept = [line for line in lines if line.split()[0] in {"0", "1"}]
            (out / "labels" / split / label.name).write_text("".join(f"{line}\n" for line in kept))
    spec = {"path": str(out), "train": "images/train", "val": "images/val", "names": {0: "scratch", 1: "dent"}}
    (out / "data.yaml").write_text(yaml.safe_dump(spec))
    return out / "data.yaml"


def test_finetune_onto_other_classes_says_what_the_head_keeps(
    parent: tuple[str, str], downscaled_data: Path, mlflow_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, _ = parent
    data = two_class_data(downscaled_data, tmp_path / "two", {"train": 64, "val": 16})
    sections = recipe(uri, mlflow_server, enabled=False)  # the lookup still uses tracking.uri
    with caplog.at_level("WARNING", logger="pipeline.training"):
        result = train(tiny_config(data, tmp_path / "runs", **sections))

    note = (
        "model.weights: the parent has 3 classes [scratch, pit, patch], the data 2 [scratch, dent]: "
        "[scratch] start from the parent's class of the same name, [dent] fresh "
        "(ultralytics maps the class layer by name and transfers every other layer)"
    )
    assert note in result.notes and note in caplog.messages
    counts = next(n for n in result.notes if n.startswith("model.weights: ultralytics: "))
    assert "Remapped 1/2 cls head rows" in counts, counts  # ultralytics' own account agrees: 1 of 2 by name

    assert len(result.epochs) == 1 and result.best_weights is not None
    checkpoint = read_checkpoint(result.best_weights)
    assert dict(checkpoint["model"].names) == {0: "scratch", 1: "dent"}
    assert checkpoint["model"].model[-1].nc == 2


def test_run_and_version_uris_resolve_to_the_same_parent(
    parent: tuple[str, str], downscaled_training: TrainResult, mlflow_server
) -> None:
    _, version = parent
    by_run = resolve_weights(f"runs:/{downscaled_training.run_id}/model", mlflow_server.uri)
    by_version = resolve_weights(f"models:/{NAME}/{version}", mlflow_server.uri)
    assert by_run.pretrained and by_version.pretrained
    assert Path(by_run.model).read_bytes() == Path(by_version.model).read_bytes()
    assert by_run.parent.run_id == by_version.parent.run_id == downscaled_training.run_id
    assert (by_run.parent.version, by_version.parent.version) == (None, version)
    assert by_version.parent.pinned == f"models:/{NAME}/{version}"
    assert by_run.parent.classes == by_version.parent.classes == ("scratch", "pit", "patch")


def test_an_alias_that_does_not_exist_is_one_line(parent: tuple[str, str], mlflow_server) -> None:
    from pipeline.training.weights import WeightsError

    with pytest.raises(WeightsError) as info:
        resolve_weights(f"models:/{NAME}@nowhere", mlflow_server.uri)
    message = str(info.value)
    assert message.startswith(f"model.weights: models:/{NAME}@nowhere: ") and "\n" not in message
    assert "nowhere" in message.split(": ", 2)[2]
