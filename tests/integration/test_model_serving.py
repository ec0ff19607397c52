"""The registered model is the screen: ``mlflow models serve`` of a calibrated model answers as `predict` does.

A tiny training logged to the session's MLflow server, registered as ``models:/served-screen@champion`` and
calibrated with ``track=True`` (its thresholds tagged on the version and its screen.json put into the logged model's
files), is served by ``mlflow models serve -m models:/served-screen@champion --env-manager local`` and asked, as
MLflow's REST scoring protocol takes a table of images::

    POST /invocations
    Content-Type: application/json

    {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the image file's bytes>"], ...]}}

(``{"dataframe_records": [{"image": "<base64>"}, ...]}`` is the same table; a column ``path`` instead names files the
server reads.) The answer is one entry per image, in the request's order::

    {"predictions": [
        {"image": 0, "verdict": "fail", "failed_classes": ["scratch"],
         "detections": [{"class_id": 0, "class": "scratch", "score": 0.61, "box": [12.5, 8.0, 30.25, 20.0]}]},
        {"image": 1, "verdict": "pass", "failed_classes": [], "detections": []},
        {"image": 2, "verdict": "error", "failed_classes": [], "detections": [],
         "error": "truncated PNG (no IEND chunk)"}
    ]}

``image`` is the row's index (the path, for a ``path`` row); the boxes are pixels of the image as sent
(x1, y1, x2, y2). The answers must be `predict`'s on the same files with the calibration's screen.json.
About 40 s on 2 CPU cores (the training, 2 epochs, and the server's start take most of it).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.inference import predict
from pipeline.inference.results import Verdict
from pipeline.screen.calibrate import calibrate
from pipeline.tracking.registry import register_model
from pipeline.tracking.screens import serve_screen
from pipeline.training import train
from tests.helpers.configs import tiny_config
from tests.helpers.mlflow_server import MlflowServer, free_port

pytestmark = pytest.mark.slow
NAME = "served-screen"
MODEL = f"models:/{NAME}@champion"


class ModelServer(MlflowServer):
    """``mlflow models serve`` of ``model`` in its own process group, health-checked and stopped as the tracking
    server is (`MlflowServer`), with a SIGTERM first: the scoring server's workers get to shut down."""

    def __init__(self, folder: Path, model: str, tracking_uri: str):
        super().__init__(folder, free_port())
        self.model, self.tracking_uri = model, tracking_uri

    def start(self, timeout_s: float = 120.0) -> None:
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow_cli), "models", "serve", "-m", self.model, "--env-manager", "local"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - kept open for the server's lifetime
        # MLflow starts the scoring server as `uvicorn` from PATH: this environment's, as when it is activated.
        path = os.pathsep.join([str(mlflow_cli.parent), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PATH": path}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder, env=env
        )
        try:
            self._wait_until_healthy(timeout_s)  # GET /health, as the scoring server answers it too
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass  # the SIGKILL below
        super().stop()  # SIGKILL to the group (whatever is left of it), and wait

    def invoke(self, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.uri}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())


def test_the_registered_model_serves_the_screen(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    uri = mlflow_server.uri
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 2},
        tracking={"uri": uri, "experiment": "served", "system_metrics": False},
        gradients={"enabled": False},
    )
    trained = train(config)
    version = register_model(trained.run_id, NAME, "champion", {}, uri)
    calibration = calibrate(
        # By a false-alarm budget: thresholds low enough to fail images of a 2-epoch model (which no recall target
        # would give: its scores are low), so the served verdicts have detections to go by.
        MODEL, synth_data, max_fp_per_image=1.0, max_false_reject=None, out=tmp_path / "calibration", track=True,
        experiment="served-cal", bootstrap=20, device="cpu", tracking_uri=uri,
    )  # fmt: skip
    screen = tmp_path / "calibration" / "screen.json"
    assert calibration.attached == f"models:/{NAME}/{version}"
    # The screen.json is in the logged model's own files, beside MLmodel: what the served model reads.
    model_id = MlflowClient(uri).get_model_version(NAME, version).source.removeprefix("models:/")
    assert f"screen.json put into the files of models:/{model_id}: served with {MODEL}" in " ".join(calibration.notes)
    logged = MlflowClient(uri).get_logged_model(model_id).artifact_location
    kept = mlflow.artifacts.download_artifacts(
        f"{logged}/screen.json", dst_path=str(tmp_path / "kept"), tracking_uri=uri
    )
    assert Path(kept).read_bytes() == screen.read_bytes()

    images = sorted((synth_data.parent / "images" / "val").glob("*.png"))[:4]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then nothing an image is made of
    sent = [*images[:2], corrupt, *images[2:]]
    body = {
        "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(p.read_bytes()).decode()] for p in sent]}
    }

    # asked for drift: 20 of the calibration split's images under a lamp 30% brighter, against its baseline
    brighter = [
        cv2.imencode(".png", cv2.convertScaleAbs(cv2.imread(str(p)), alpha=1.3))[1].tobytes()
        for p in sorted((synth_data.parent / "images" / "val").glob("*.png"))[:20]
    ]
    asked = {
        "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()] for b in brighter]},
        "params": {"drift": True},
    }

    server = ModelServer(tmp_path, MODEL, uri)
    server.start()
    try:
        answers = server.invoke(body)["predictions"]
        drifted = server.invoke(asked)["predictions"]
    finally:
        server.stop()
    assert "drift" not in answers[0]  # not asked
    assert len(drifted) == 20 and all(a["drift"] == drifted[0]["drift"] for a in drifted)
    assert drifted[0]["drift"]["drifted"] is True and "brightness" in drifted[0]["drift"]["line"]

    # predict on the same files, with the calibration's screen: the served model's answers, image by image
    listed = tmp_path / "sent.txt"
    listed.write_text("".join(f"{p}\n" for p in sent), encoding="utf-8")
    predict(listed, MODEL, tmp_path / "predicted", screen=str(screen), progress=False, tracking_uri=uri)
    records = {r["path"]: r for r in _jsonl(tmp_path / "predicted" / "predictions.jsonl")}
    (error,) = _jsonl(tmp_path / "predicted" / "errors.jsonl")
    settings = json.loads((tmp_path / "predicted" / "run.json").read_text(encoding="utf-8"))
    thresholds = dict(settings["thresholds"])
    verdict = Verdict(thresholds, thresholds.pop("default"))

    assert [a["image"] for a in answers] == list(range(len(sent)))
    assert answers[2] == {
        "image": 2, "verdict": "error", "failed_classes": [], "detections": [], "error": error["reason"]
    }  # fmt: skip
    assert error["path"] == str(corrupt)
    served = [a for a in answers if a["verdict"] != "error"]
    assert len(served) == len(images) and sum(len(a["detections"]) for a in served) > 0
    for answer, path in zip(served, images, strict=True):
        expected = records[str(path)]["detections"]
        assert len(answer["detections"]) == len(expected), path
        for got, want in zip(answer["detections"], expected, strict=True):
            assert (got["class_id"], got["class"]) == (want["class_id"], want["class"])
            assert abs(got["score"] - want["score"]) <= 1e-3
            assert all(abs(a - b) <= 0.5 for a, b in zip(got["box"], want["box"], strict=True))
        failing = sorted({d["class"] for d in expected if d["score"] >= verdict.threshold(d["class"])})
        assert answer["failed_classes"] == failing and answer["verdict"] == ("fail" if failing else "pass")
        assert "error" not in answer

    # The version and its run share the logged model: the last calibration of these weights is the screen served.
    later = tmp_path / "later.json"
    later.write_text(json.dumps({**json.loads(screen.read_text()), "created": "2030-01-01T00:00:00+00:00"}))
    assert serve_screen(f"runs:/{trained.run_id}/model", later, uri) == f"models:/{model_id}"
    again = mlflow.artifacts.download_artifacts(
        f"{logged}/screen.json", dst_path=str(tmp_path / "again"), tracking_uri=uri
    )
    assert Path(again).read_bytes() == later.read_bytes()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
