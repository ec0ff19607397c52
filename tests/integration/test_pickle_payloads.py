"""A crafted checkpoint (a pickle that runs a shell command) runs nowhere: predict, evaluate, train, resume,
and models fetched by models:/ and runs:/ URIs. Each is refused in one line naming the file and the
opt-out; the payload's marker file stays absent. The positive controls show the same payloads do run
once trust is given (or when MLflow's pyfunc loader is used), so these tests can fail."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.checkpoints import TRUST_ENV
from tests.helpers.commands import one_line_error, run
from tests.helpers.payloads import write_payload

pytestmark = pytest.mark.slow


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """No opt-out at the start; whatever a test's --trust-checkpoint sets is undone after it."""
    monkeypatch.setenv(TRUST_ENV, "")


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload-ran.txt"
    return write_payload(tmp_path / "downloads" / "best.pt", marker), marker


def test_predict_refuses_a_payload_and_runs_it_only_when_trusted(
    untrusted: None, evil: tuple[Path, Path], synth_data: Path, tmp_path: Path, capsys
) -> None:
    weights, marker = evil
    source = synth_data.parent / "images" / "val"
    args = ["predict", str(source), "--model", str(weights), "--out", str(tmp_path / "out"), "--no-progress"]
    code, _, err = run(capsys, *args)
    one_line_error(code, err, str(weights), "refused", TRUST_ENV, "--trust-checkpoint")
    assert not marker.exists() and not (tmp_path / "out").exists()

    code, _, err = run(capsys, *args, "--trust-checkpoint")  # the positive control
    assert marker.exists() and code == 2, err  # it ran; the "model" it left is then no model


def test_evaluate_refuses_a_payload_and_runs_it_only_when_trusted(
    untrusted: None, evil: tuple[Path, Path], synth_data: Path, capsys
) -> None:
    weights, marker = evil
    args = ["evaluate", "--model", str(weights), "--data", str(synth_data), "--device", "cpu"]
    code, _, err = run(capsys, *args)
    one_line_error(code, err, str(weights), "refused", "--trust-checkpoint")
    assert not marker.exists()
    code, _, err = run(capsys, *args, "--trust-checkpoint")
    assert marker.exists() and code == 2, err


def test_train_refuses_a_payload_as_model_weights(
    untrusted: None, evil: tuple[Path, Path], synth_data: Path, tmp_path: Path, capsys
) -> None:
    weights, marker = evil
    config = tmp_path / "exp.yaml"
    project = tmp_path / "runs"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(synth_data)},
                "model": {"weights": str(weights)},
                "train": {"epochs": 1, "imgsz": 64, "device": "cpu", "workers": 0, "project": str(project)},
                "tracking": {"enabled": False},
            }
        )
    )
    code, _, err = run(capsys, "train", str(config))
    one_line_error(code, err, str(weights), "refused", TRUST_ENV)
    assert not marker.exists() and not project.exists()


def test_resume_refuses_a_payload_as_last_pt(untrusted: None, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "runs" / "train" / "exp"
    marker = tmp_path / "payload-ran.txt"
    last = write_payload(folder / "weights" / "last.pt", marker)
    (folder / "session.json").write_text("{}")
    code, _, err = run(capsys, "resume", str(folder))
    one_line_error(code, err, str(last), "refused", TRUST_ENV)
    assert not marker.exists()


def _pickled_model(marker: Path):
    """A pyfunc model whose python_model.pkl, once unpickled, writes ``marker``."""
    import mlflow

    class Crafted(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001 - never called
            return model_input

        def __reduce__(self):
            return (os.system, (f"echo ran > {shlex.quote(str(marker))}",))

    return Crafted()


def test_models_from_mlflow_are_loaded_from_their_weights_never_unpickled(
    untrusted: None, evil: tuple[Path, Path], synth_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.store import using_tracking_uri

    weights, weights_marker = evil
    pickle_marker = tmp_path / "pyfunc-ran.txt"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("crafted", artifact_location=(tmp_path / "store" / "mlruns").as_uri())
    # set_registry_uri also sets $MLFLOW_REGISTRY_URI, which set_registry_uri(None) leaves set: monkeypatch
    # owns the variable, so it is gone after the test and later tests register models in their own stores.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    with using_tracking_uri(uri):
        mlflow.set_registry_uri(uri)
        try:
            with mlflow.start_run(experiment_id=experiment) as started:
                mlflow.pyfunc.log_model(  # requirements given: inferring them would load (and run) the model
                    name="model",
                    python_model=_pickled_model(pickle_marker),
                    artifacts={"weights": str(weights)},
                    pip_requirements=["ultralytics"],
                )
            version = mlflow.register_model(f"runs:/{started.info.run_id}/model", "crafted")
        finally:
            mlflow.set_registry_uri(None)
    client.set_registered_model_alias("crafted", "champion", version.version)
    assert not weights_marker.exists() and not pickle_marker.exists()
    capsys.readouterr()  # MLflow's notes while the store was made

    source = synth_data.parent / "images" / "val"
    for model_uri in ("models:/crafted@champion", f"runs:/{started.info.run_id}/model", "models:/crafted/1"):
        code, _, err = run(
            capsys, "predict", str(source), "--model", model_uri, "--tracking-uri", uri, "--out", str(tmp_path / "o")
        )
        one_line_error(code, err, model_uri, "refused", TRUST_ENV)
        assert not weights_marker.exists() and not pickle_marker.exists()
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's inner clients used the store given, made no other

    # The positive control: MLflow's own loader unpickles python_model.pkl, and the payload runs.
    with using_tracking_uri(uri):
        try:
            mlflow.pyfunc.load_model("models:/crafted@champion")
        except Exception:  # noqa: BLE001, S110 - the crafted "model" is no model; what matters is that it ran
            pass
    assert pickle_marker.exists()
