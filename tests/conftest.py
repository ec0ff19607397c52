"""Shared fixtures: hermetic environment, tiny synthetic data, a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports ultralytics or mlflow: a private settings folder, no downloads, no user tracking URI.
_HOME = Path(tempfile.mkdtemp(prefix="yolo-pipeline-tests-"))
os.environ["YOLO_CONFIG_DIR"] = str(_HOME / "ultralytics")
os.environ["YOLO_OFFLINE"] = "true"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ["YOLO_PIPELINE_WEIGHTS_DIR"] = str(_HOME / "weights")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(_HOME / "hypothesis")  # not .hypothesis/ in the repo

import pytest  # noqa: E402

from pipeline.data.synth import synthesize  # noqa: E402
from tests.helpers.configs import tiny_config  # noqa: E402
from tests.helpers.mlflow_server import MlflowServer  # noqa: E402

# The session's screen trainings (below) and the test files that use them: under pytest-xdist (`make test`) these
# files run on one worker, which trains them once; collection checks the list is whole.
SHARED_TRAININGS = frozenset({"downscaled_training", "weak_training"})
SHARED_TRAINING_FILES = frozenset(
    f"tests/integration/test_{name}.py"
    for name in ("calibrate", "drift", "evaluate", "export", "finetune_registry", "learning", "model_serving",
                 "predict_scale", "promote_gates", "screen_predict")
)  # fmt: skip


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile`, with the files sharing the screen trainings as one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileOrSharedTraining(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "screen-trainings" if path in SHARED_TRAINING_FILES else path

    return FileOrSharedTraining(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unlisted = {
        item.nodeid.split("::", 1)[0] for item in items if SHARED_TRAININGS & set(getattr(item, "fixturenames", ()))
    } - SHARED_TRAINING_FILES
    if unlisted:
        raise pytest.UsageError(f"tests/conftest.py: add {', '.join(sorted(unlisted))} to SHARED_TRAINING_FILES")
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, _cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own folder, so runs/, mlflow.db and mlruns/ never land in the repo, and
    caches (ONNX exports) go to one folder of the session, not the home directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_PIPELINE_CACHE", str(_cache))
    return tmp_path


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic 64-px defect images (96 train, 24 val) with their data.yaml."""
    out = tmp_path_factory.mktemp("synth")
    return synthesize(out, images=120, seed=0, size=64).data_yaml


@pytest.fixture(scope="session")
def downscaled_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 synthetic 128-px defect images (320 train, 80 val) with their data.yaml."""
    return synthesize(tmp_path_factory.mktemp("downscaled-data"), images=400, seed=1, size=128).data_yaml


@pytest.fixture(scope="session")
def good_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of defect-free 128-px synthetic parts (as `downscaled_data`'s surfaces, another seed): the good
    images a screen's false-reject rate is measured on."""
    import shutil

    made = synthesize(tmp_path_factory.mktemp("good-source"), images=60, seed=5, size=128, backgrounds=0.9)
    folder = tmp_path_factory.mktemp("good-parts")
    for label in sorted(made.data_yaml.parent.glob("labels/*/*.txt")):
        if not label.read_text().strip():  # an empty label file: a part without a defect
            image = next(made.data_yaml.parent.glob(f"images/{label.parent.name}/{label.stem}.*"))
            shutil.copy(image, folder / image.name)
    assert len(list(folder.iterdir())) >= 40
    return folder


SCREEN_EXPERIMENT = "screen-models"  # the experiment both trainings below are logged to


def _screen_training(data: Path, server, folder: Path, epochs: int):
    """The recipe both shared trainings follow, logged to the session's server; only the epochs differ."""
    from pipeline.training import train

    config = tiny_config(
        data,
        folder / "runs",
        train={"epochs": epochs, "batch": 8, "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0},
        tracking={"uri": server.uri, "experiment": SCREEN_EXPERIMENT, "system_metrics": False},
        gradients={"enabled": False},
    )
    return train(config)


@pytest.fixture(scope="session")
def downscaled_training(downscaled_data: Path, mlflow_server, tmp_path_factory: pytest.TempPathFactory):
    """10 epochs of YOLO11n at 64 px on `downscaled_data`, logged to the session's MLflow server: a model that
    finds the defects, having learned them at half their size (one training, shared by test_learning,
    test_predict_scale and the screen tests, which compare it with `weak_training`)."""
    return _screen_training(downscaled_data, mlflow_server, tmp_path_factory.mktemp("downscaled"), epochs=10)


@pytest.fixture(scope="session")
def weak_training(downscaled_data: Path, mlflow_server, tmp_path_factory: pytest.TempPathFactory):
    """1 epoch of the same recipe, logged beside `downscaled_training`: a clearly worse model of the same classes."""
    return _screen_training(downscaled_data, mlflow_server, tmp_path_factory.mktemp("weak"), epochs=1)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One real `mlflow server` for the session (its own process group, killed at the end)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()
