"""`predict` with ordinary mistakes: linked folders, a folder or file as --out, another source or a retrained
model into the same results, nothing to predict, a missing model, names that are not UTF-8, tracking stores
that are not there, and the Ray it starts. Each ends in one line (or the right results), nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from pipeline.inference.backends import labels, racers
from pipeline.inference.onnx_export import onnx_available
from pipeline.inference.runtime import schedule
from pipeline.training.run import TrainResult
from tests.helpers.commands import one_line_error, run
from tests.helpers.configs import untracked_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One tiny untracked training (1 epoch): its best.pt and last.pt are two different models."""
    return untracked_training(synth_data, tmp_path_factory.mktemp("safety-model"))


@pytest.fixture
def images(synth_data: Path, tmp_path: Path) -> Path:
    """Four real 64-px images in a folder of their own."""
    folder = tmp_path / "line"
    folder.mkdir()
    for image in sorted((synth_data.parent / "images" / "val").glob("*.png"))[:4]:
        shutil.copy(image, folder / image.name)
    return folder


def records(out: Path, name: str = "predictions.jsonl") -> list[dict]:
    path = out / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def predict(capsys, source: Path | str, model: Path | str, out: Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "predict", str(source), "--model", str(model), "--out", str(out), "--no-progress", *extra)


def test_links_to_folders_predict_each_image_once(trained: TrainResult, images: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    names = sorted(p.name for p in images.iterdir())
    shutil.copy(images / names[0], root / "a" / names[0])
    shutil.copy(images / names[1], root / "b" / names[1])
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    shutil.copy(images / names[2], sibling / names[2])
    (root / "a" / "loop").symlink_to("..")  # back to root
    (root / "up").symlink_to("..")  # to the folder holding root: root again, and more
    (root / "b" / "sib").symlink_to(sibling)
    (root / "sib2").symlink_to(sibling)  # the same sibling by a second link
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    for source, out in ((root, tmp_path / "walked"), (f"{root}/**/*.png", tmp_path / "globbed")):
        code, stdout, err = predict(capsys, source, trained.best_weights, out, "--runtime", "torch")
        assert code == 0, err
        found = sorted(Path(r["path"]).name for r in records(out))
        assert found == sorted(names[:3]), found  # each real image once; nothing from outside the links' targets
        assert "predicted 3 images" in stdout
    listing = tmp_path / "list.txt"
    first = root / "a" / names[0]
    listing.write_text(f"{first}\n{root / 'a' / 'loop' / 'a' / names[0]}\n{first}\n")
    code, _, err = predict(capsys, listing, trained.best_weights, tmp_path / "listed", "--runtime", "torch")
    assert code == 0 and len(records(tmp_path / "listed")) == 1, err


def test_out_must_be_predicts_own_folder(trained: TrainResult, images: Path, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = predict(capsys, images, trained.best_weights, mine)
    one_line_error(code, err, str(mine), "was not made by yolo-pipeline")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "results.csv"
    a_file.write_text("a,b\n")
    code, _, err = predict(capsys, images, trained.best_weights, a_file)
    one_line_error(code, err, str(a_file), "is a file")
    code, _, err = predict(capsys, images, trained.best_weights, a_file / "sub")
    one_line_error(code, err, "--out")
    assert a_file.read_text() == "a,b\n"


def test_results_are_pinned_to_the_source_and_the_models_bytes(
    trained: TrainResult, images: Path, synth_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    shutil.copy(trained.best_weights, model)
    out = tmp_path / "results"
    code, _, err = predict(capsys, images, model, out)  # runtime auto: exports ONNX on this CPU
    assert code == 0, err
    racing = racers(available=True)
    if len(racing) > 1:  # auto races them on this new model's first batches (one here), and says so
        said = (
            f"predict: runtime {'+'.join(racing)}: not measured before for this model, size, batch and thread count: "
            f"the first {len(schedule(racing))} batches run on {labels(racing)} in turn, timed end to end"
        )
        assert said in err, err
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["source"] == str(images) and len(run_json["model_sha256"]) == 64

    other = tmp_path / "other"
    shutil.copytree(synth_data.parent / "images" / "train", other)
    code, _, err = predict(capsys, other, model, out)
    one_line_error(code, err, str(out), "source=")

    # The same folder by a relative name is the same source: its images are found done, none added twice.
    monkeypatch.chdir(tmp_path)
    code, stdout, err = predict(capsys, "line", "model.pt", Path("results"))
    assert code == 0 and "4 done by an earlier run" in stdout, err
    assert len(records(out)) == 4

    exports = Path(os.environ["YOLO_PIPELINE_CACHE"]) / "onnx"
    before = sorted(exports.glob("*.onnx"))
    assert before or not onnx_available()  # the first run exported, so a second export would show
    shutil.copy(trained.save_dir / "weights" / "last.pt", model)  # "retrained" at the same path
    code, _, err = predict(capsys, images, model, out)
    one_line_error(code, err, str(out), "model_sha256=")
    assert sorted(exports.glob("*.onnx")) == before  # refused before the export, not after
    assert len(records(out)) == 4

    # A folder from an earlier version (run.json and the logs, no marker, fewer settings) still resumes.
    shutil.copy(trained.best_weights, model)
    (out / ".yolo-pipeline.json").unlink()
    legacy = {k: v for k, v in run_json.items() if k not in {"source", "model_sha256"}}
    (out / "run.json").write_text(json.dumps(legacy))
    code, stdout, err = predict(capsys, images, model, out)
    assert code == 0 and "4 done by an earlier run" in stdout, err


def test_nothing_to_predict_is_an_error(trained: TrainResult, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    for source in (empty, f"{empty}/**/*.png", tmp_path / "gone"):
        code, _, err = predict(capsys, source, trained.best_weights, tmp_path / "out")
        one_line_error(code, err, str(source))
        assert "no images found" in err or "no such file or folder" in err
    assert not (tmp_path / "out").exists()


def test_a_missing_model_file_fails_at_once_without_the_network(
    images: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def no_connect(self, address):
        attempts.append(f"connect {address}")
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    for model in ("runs/x/best.pt", "best.pt", str(tmp_path / "gone.pt")):
        code, _, err = predict(capsys, images, model, tmp_path / "out")
        one_line_error(code, err, model, "no such model file")
    assert attempts == [] and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_names_that_are_not_utf8_are_predicted_and_never_break_a_rerun(
    trained: TrainResult, images: Path, tmp_path: Path, capsys
) -> None:
    first = sorted(images.iterdir())[0]
    odd = images / os.fsdecode(b"odd\xff name.png")
    os.rename(first, odd)
    broken = images / os.fsdecode(b"broken\xfe.png")
    broken.write_bytes(b"not pixels")
    out = tmp_path / "results"
    code, stdout, err = predict(capsys, images, trained.best_weights, out, "--runtime", "torch", "--save-images")
    assert code == 1 and "predicted 4 images, 1 failed" in stdout, err  # the broken file is reported, not fatal
    assert str(odd) in {r["path"] for r in records(out)}
    assert [r["path"] for r in records(out, "errors.jsonl")] == [str(broken)]
    (out / "summary.csv").read_bytes().decode("utf-8")  # valid UTF-8 for any reader
    assert len(list((out / "annotated").rglob("*.jpg"))) == 4
    code, stdout, err = predict(capsys, images, trained.best_weights, out, "--runtime", "torch", "--save-images")
    assert code == 1 and "predicted 0 images, 0 failed, 5 done by an earlier run" in stdout, err


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lookups_fail_fast_and_create_no_store(images: Path, tmp_path: Path, capsys) -> None:
    dead = f"http://127.0.0.1:{_dead_port()}"
    started = time.monotonic()
    code, _, err = predict(capsys, images, "models:/parts@champion", tmp_path / "out", "--tracking-uri", dead)
    one_line_error(code, err, "models:/parts@champion", dead, "does not answer")
    code, _, err = run(capsys, "resume", "0123456789abcdef", "--tracking-uri", dead)
    one_line_error(code, err, "0123456789abcdef", "does not answer")
    assert time.monotonic() - started < 20
    code, _, err = predict(capsys, images, "models:/parts@champion", tmp_path / "out")
    one_line_error(code, err, "no MLflow store at", "mlflow.db")
    code, _, err = run(capsys, "resume", "0123456789abcdef")
    one_line_error(code, err, "0123456789abcdef", "no MLflow store at")
    assert not list(Path.cwd().glob("mlflow.db*")) and not (Path.cwd() / "mlruns").exists()
    assert not (tmp_path / "out").exists()


def test_a_local_ray_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    import psutil

    from pipeline.ray_local import start_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray()
    try:
        listening = []
        for process in psutil.Process().children(recursive=True):
            try:
                sockets = process.net_connections("inet")
            except psutil.Error:
                continue
            listening += [(process.name(), c.laddr.ip) for c in sockets if c.status == psutil.CONN_LISTEN]
        assert listening, "Ray's services should be listening somewhere"
        loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
        assert {ip for _, ip in listening} <= loopback, listening
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch", "0"), ("--conf", "nan"), ("--conf", "1.5"), ("--iou", "-1"), ("--max-det", "0"), ("--imgsz", "-64")],
)
def test_numeric_options_out_of_range(images: Path, tmp_path: Path, capsys, option: str, value: str) -> None:
    code, _, err = predict(capsys, images, tmp_path / "never-loaded.pt", tmp_path / "out", option, value)
    one_line_error(code, err, option, value)
    assert not (tmp_path / "out").exists()
