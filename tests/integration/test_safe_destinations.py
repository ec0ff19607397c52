"""Every command that writes a folder: a user's folder is refused and survives byte for byte, the tool's own
folder is replaced only once the new one is whole, names never lead outside, archives never write outside."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline import cli
from pipeline.data.synth import synthesize
from pipeline.destinations import MARKER, marker_of

USER_BYTES = b"a user's labels \x00\xff, not to be lost\n"
NOT_OURS = "exists and was not made by yolo-pipeline; choose another"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under ``root``, hidden ones included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_bytes(USER_BYTES)
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one error line of a command that must exit 2."""
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small YOLO dataset (8 images, 32 px) to import and split."""
    return synthesize(tmp_path_factory.mktemp("src") / "set", images=8, seed=2, size=32).data_yaml


def leftovers(folder: Path) -> list[str]:
    """Staging or old folders a swap left behind (there must be none)."""
    return sorted(p.name for p in folder.iterdir() if ".staging-" in p.name or ".old-" in p.name)


# ---- data import ------------------------------------------------------------------------------------------


def test_import_refuses_a_user_folder_and_keeps_its_file(source: Path, tmp_path: Path, capsys) -> None:
    user = user_folder(tmp_path / "datasets" / "parts")
    line = refused(["data", "import", str(source), "--name", "parts"], capsys)
    assert line == f"error: --name {Path('datasets/parts')}: {NOT_OURS} --name or remove it yourself"
    assert snapshot(user) == {"notes.txt": USER_BYTES}


@pytest.mark.parametrize("name", [".", "..", "../../x", "a/b", ""])
def test_import_refuses_bad_names_and_touches_nothing(name: str, source: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "datasets" / "other").mkdir(parents=True)
    (tmp_path / "datasets" / "other" / "keep.txt").write_bytes(USER_BYTES)
    (tmp_path / "datasets" / "parts.yaml").write_text("name: parts\n")
    before = snapshot(tmp_path)
    line = refused(["data", "import", str(source), "--name", name], capsys)
    assert line.startswith(f"error: --name {name!r}: a name is letters, digits")
    assert snapshot(tmp_path) == before


def test_import_reruns_into_its_own_folder(source: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["data", "import", str(source), "--name", "parts"]) == 0
    out = tmp_path / "datasets" / "parts"
    assert marker_of(out)["kind"] == "dataset" and marker_of(out)["command"] == "data import"
    assert json.loads((out / "card.json").read_text())["images"] == 8
    assert cli.main(["data", "import", str(source), "--name", "parts", "--images", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"card: {out.resolve() / 'card.md'}" in printed and ".staging-" not in printed
    assert json.loads((out / "card.json").read_text())["images"] == 4
    assert len(list((out / "images").rglob("*.png"))) == 4
    assert leftovers(tmp_path / "datasets") == []


@pytest.mark.parametrize("step", ["write_yolo", "build_card", "write_card", "report"])
def test_a_failed_import_leaves_the_previous_one_identical(
    step: str, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import pipeline.data.importer as importer

    assert cli.main(["data", "import", str(source), "--name", "parts"]) == 0
    before = snapshot(tmp_path / "datasets")

    def half_then_crash(real):
        def crash(*args, **kwargs):
            real(*args, **kwargs)  # the step does its writing, then fails (as a bad file name would)
            raise UnicodeEncodeError("utf-8", "x\udcff", 1, 2, "surrogates not allowed")

        return crash

    if step == "report":
        monkeypatch.setattr(importer.ValidationReport, "write", half_then_crash(importer.ValidationReport.write))
    else:
        monkeypatch.setattr(importer, step, half_then_crash(getattr(importer, step)))
    capsys.readouterr()
    assert cli.main(["data", "import", str(source), "--name", "parts", "--images", "4"]) == 1
    assert capsys.readouterr().err.startswith("error: UnicodeEncodeError: ")  # one line, no traceback
    assert snapshot(tmp_path / "datasets") == before


def test_a_manifest_import_refuses_a_user_folder(source: Path, tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "datasets" / "parts.yaml"
    user = user_folder(tmp_path / "datasets" / "parts")
    manifest.write_text(yaml.safe_dump({"name": "parts", "path": str(source.parent)}))
    line = refused(["data", "import", "--manifest", str(manifest)], capsys)
    assert line == f"error: name {user}: {NOT_OURS} name or remove it yourself"
    assert snapshot(user) == {"notes.txt": USER_BYTES}


# ---- data split, data synth ---------------------------------------------------------------------------------


def test_split_refuses_a_user_folder_and_the_current_folder(source: Path, tmp_path: Path, capsys) -> None:
    user = user_folder(tmp_path / "mine")
    split = ["data", "split", str(source), "--split", "train=0.5,val=0.5", "--out"]
    assert refused([*split, "mine"], capsys) == f"error: --out mine: {NOT_OURS} --out or remove it yourself"
    assert refused([*split, "."], capsys) == f"error: --out .: {NOT_OURS} --out or remove it yourself"
    assert snapshot(tmp_path) == {"mine": None, "mine/notes.txt": USER_BYTES}
    assert snapshot(user) == {"notes.txt": USER_BYTES}


def test_split_replaces_an_earlier_split_or_import_but_not_a_synthetic_set(
    source: Path, tmp_path: Path, capsys
) -> None:
    split = ["data", "split", str(source), "--out", "resplit", "--split"]

    def sizes() -> tuple[int, int]:
        card = json.loads((tmp_path / "resplit" / "card.json").read_text())
        return card["splits"]["train"]["images"], card["splits"]["val"]["images"]

    assert cli.main([*split, "train=0.5,val=0.5"]) == 0
    assert sizes() == (4, 4)
    assert cli.main([*split, "train=0.75,val=0.25"]) == 0  # its own folder: replaced by the new split
    assert sizes() == (5, 3)  # the stratified split of 8 images (per class, rounded)
    assert marker_of(tmp_path / "resplit")["command"] == "data split"
    assert cli.main(["data", "import", str(source), "--name", "parts"]) == 0
    assert cli.main(["data", "split", str(source), "--out", "datasets/parts", "--split", "train=0.5,val=0.5"]) == 0
    assert cli.main(["data", "synth", "--out", "synthetic", "--images", "4", "--size", "32"]) == 0
    capsys.readouterr()
    line = refused([*split[:-2], "synthetic", "--split", "train=0.5,val=0.5"], capsys)
    assert line == "error: --out synthetic: was made by yolo-pipeline synthetic, not dataset; choose another --out"
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "datasets") == []


def test_synth_refuses_a_user_folder_and_reruns_into_its_own(tmp_path: Path, capsys) -> None:
    user = user_folder(tmp_path / "mine")
    synth = ["data", "synth", "--size", "32", "--out"]
    assert refused([*synth, "mine", "--images", "4"], capsys).startswith(f"error: --out mine: {NOT_OURS}")
    assert snapshot(user) == {"notes.txt": USER_BYTES}
    out = tmp_path / "datasets" / "synthetic-defects"  # what `make demo` writes before every demo
    assert cli.main([*synth, str(out), "--images", "6"]) == 0
    assert cli.main([*synth, str(out), "--images", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"data.path for a config: {out / 'data.yaml'}" in printed and ".staging-" not in printed
    assert len(list((out / "images").rglob("*.png"))) == 4
    assert marker_of(out)["kind"] == "synthetic" and marker_of(out)["images"] == 4
    from pipeline.data.dataset import read_data_yaml

    layout = read_data_yaml(out / "data.yaml")  # the splits resolve inside the final folder
    assert {s: p.parent.parent for s, p in layout.splits.items()} == {"train": out, "val": out}
    assert "staging" not in (out / "data.yaml").read_text()
    assert leftovers(out.parent) == []


# ---- data stats -------------------------------------------------------------------------------------------------


def test_stats_writes_its_card_only_into_a_new_folder_or_a_dataset_of_this_tool(
    source: Path, tmp_path: Path, capsys
) -> None:
    user = user_folder(tmp_path / "mine")
    assert refused(["data", "stats", str(source), "--out", "mine"], capsys).startswith(f"error: --out mine: {NOT_OURS}")
    assert snapshot(user) == {"notes.txt": USER_BYTES}
    assert cli.main(["data", "stats", str(source), "--out", "cards"]) == 0
    assert cli.main(["data", "stats", str(source), "--out", "cards"]) == 0  # its own folder again
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == [MARKER, "card.json", "card.md"]
    assert marker_of(tmp_path / "cards")["kind"] == "data stats"
    assert cli.main(["data", "import", str(source), "--name", "parts", "--images", "4"]) == 0
    parts = tmp_path / "datasets" / "parts"
    images_before = {k: v for k, v in snapshot(parts).items() if not k.startswith("card.")}
    assert cli.main(["data", "stats", str(source), "--out", str(parts)]) == 0  # the full source's card
    assert json.loads((parts / "card.json").read_text())["images"] == 8
    assert {k: v for k, v in snapshot(parts).items() if not k.startswith("card.")} == images_before
    (tmp_path / "file.txt").write_bytes(USER_BYTES)
    assert refused(["data", "stats", str(source), "--out", "file.txt"], capsys).startswith("error: --out file.txt: is")
    assert (tmp_path / "file.txt").read_bytes() == USER_BYTES


# ---- compare --out, evaluate --out ------------------------------------------------------------------------------


def fake_runs():
    from pipeline.tracking.runs import RunRecord

    def record(run_id: str, value: float) -> RunRecord:
        return RunRecord(
            run_id=run_id * 32,
            name=f"run-{run_id}",
            status="FINISHED",
            start_ms=0,
            end_ms=60_000,
            params={"train.lr0": str(value)},
            metrics={"mAP50": value, "mAP50_95": value / 2, "best.mAP50_95": value / 2, "AP50.pit": value},
            tags={},
            histories={"mAP50_95": [(1, value / 4), (2, value / 2)], "train.box_loss": [(1, 2.0), (2, 1.5)]},
        )

    return [record("a", 0.4), record("b", 0.6)]


@pytest.fixture
def offline_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare reads these two runs instead of asking MLflow."""
    import pipeline.tracking.runs as runs

    monkeypatch.setattr(runs, "find_runs", lambda *args, **kwargs: fake_runs())
    monkeypatch.setattr(runs, "add_histories", lambda *args, **kwargs: None)


def test_compare_refuses_a_user_folder_before_asking_mlflow(tmp_path: Path, capsys) -> None:
    user = user_folder(tmp_path / "mine")
    line = refused(["compare", "--experiment", "x", "--out", "mine"], capsys)
    assert line == f"error: --out mine: {NOT_OURS} --out or remove it yourself"
    assert user.is_dir()
    assert snapshot(tmp_path) == {"mine": None, "mine/notes.txt": USER_BYTES}  # no mlflow.db either


def test_compare_reruns_into_its_own_folder_and_a_failure_keeps_the_previous(
    offline_runs: None, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.comparison import plots

    assert cli.main(["compare", "--experiment", "x", "--out", "cmp"]) == 0
    assert cli.main(["compare", "--experiment", "x", "--out", "cmp"]) == 0
    printed = capsys.readouterr().out
    report = (tmp_path / "cmp").resolve() / "report.html"
    assert f"report: {report}" in printed and ".staging-" not in printed and report.is_file()
    assert marker_of(tmp_path / "cmp")["kind"] == "compare"
    before = snapshot(tmp_path / "cmp")
    assert len(before) == 9  # four tables/reports, four charts, the marker

    def crash(*args: object) -> None:
        raise RuntimeError("halfway through the charts")

    monkeypatch.setattr(plots, "per_class_ap50", crash)
    capsys.readouterr()
    assert cli.main(["compare", "--experiment", "x", "--out", "cmp"]) == 1
    assert "error: RuntimeError: halfway through the charts" in capsys.readouterr().err
    assert snapshot(tmp_path / "cmp") == before and leftovers(tmp_path) == []


def test_evaluate_refuses_a_user_folder_before_loading_the_model(tmp_path: Path, capsys) -> None:
    user = user_folder(tmp_path / "mine")
    line = refused(["evaluate", "--model", "missing.pt", "--data", "nowhere", "--out", "mine"], capsys)
    assert line == f"error: --out mine: {NOT_OURS} --out or remove it yourself"
    assert snapshot(user) == {"notes.txt": USER_BYTES}


def test_evaluate_writes_its_files_whole_with_their_final_paths(tmp_path: Path) -> None:
    from pipeline.evaluation.evaluation import Evaluation, _write

    result = Evaluation("m.pt", "d.yaml", "val", 1, 1, {"mAP50": 0.5}, {"AP": 0.4}, {})
    out = tmp_path / "eval"
    files = _write(result, {"images": []}, [], out)
    files = _write(result, {"images": [1]}, [], out)  # a rerun into its own folder
    assert files == [out / "evaluation.json", out / "predictions.json", out / "ground_truth.json"]
    saved = json.loads(files[0].read_text())
    assert saved["files"] == [str(p) for p in files] and json.loads(files[2].read_text()) == {"images": [1]}
    before = snapshot(out)
    with pytest.raises(TypeError):  # a value JSON cannot hold: the failure comes after predictions.json is written
        _write(result, {"images": {1}}, [], out)
    assert snapshot(out) == before and leftovers(tmp_path) == []


# ---- augment preview --------------------------------------------------------------------------------------------


@pytest.fixture
def preview_config(synth_data: Path, tmp_path: Path) -> Path:
    config = tmp_path / "preview.yaml"
    config.write_text(f"data:\n  path: {synth_data}\ntrain:\n  imgsz: 64\naugment:\n  mosaic: 0.0\n")
    return config


def test_augment_preview_never_overwrites_a_file_it_did_not_make(preview_config: Path, tmp_path: Path, capsys) -> None:
    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((8, 8, 3), np.uint8))
    photo = (tmp_path / "photo.png").read_bytes()
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots.png").mkdir()
    preview = ["augment", "preview", str(preview_config), "--samples", "4", "--out"]
    expected = {
        "photo.png": "error: --out photo.png: exists and was not made by yolo-pipeline augment preview; "
        "choose another --out or remove it yourself",
        "shots": "error: --out shots: a preview is a PNG file; give a name ending in .png",
        "shots.png": "error: --out shots.png: is a folder; give a .png file name, e.g. shots.png/preview.png",
    }
    for out, message in expected.items():
        assert refused([*preview, out], capsys) == message
    assert (tmp_path / "photo.png").read_bytes() == photo


def test_augment_preview_overwrites_its_own_preview(preview_config: Path, tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.training.augment_preview import SOFTWARE, write_png

    write_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "grid.png")  # an earlier preview
    assert cli.main(["augment", "preview", str(preview_config), "--samples", "4", "--out", "grid.png"]) == 0
    with Image.open(tmp_path / "grid.png") as image:
        assert image.text["Software"] == SOFTWARE and image.size[0] > 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "preview.yaml"]  # no temporary file left


# ---- archives -----------------------------------------------------------------------------------------------------


def manifest_for(tmp_path: Path, archive: Path, **fields: str) -> Path:
    manifest = tmp_path / "datasets" / "parts.yaml"
    manifest.parent.mkdir(exist_ok=True)
    spec = {"name": "parts", "format": "yolo", "url": archive.as_uri(), **fields}
    manifest.write_text(yaml.safe_dump(spec))
    return manifest


def yolo_tar(source: Path, path: Path, extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source.parent, arcname=".")
        for member in extra:
            tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return path


def evil_file(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 4
    return member


def evil_link(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = tarfile.SYMTYPE, target
    return member


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (lambda root: evil_file("../../../evil.txt"), "archive member '../../../evil.txt' points outside its folder"),
        (lambda root: evil_file("images/../../../../evil.txt"), "points outside its folder"),
        (lambda root: evil_file(str(root / "abs-evil.txt")), "points outside its folder"),
        (lambda root: evil_link("escape", str(root)), "cannot unpack"),
        (lambda root: evil_link("up", "../../.."), "cannot unpack"),
    ],
)
def test_an_archive_member_leading_outside_refuses_the_archive(
    member, reason: str, source: Path, tmp_path: Path, capsys
) -> None:
    archive = yolo_tar(source, tmp_path / "parts.tar.gz", [member(tmp_path)])
    manifest = manifest_for(tmp_path, archive)
    before = snapshot(tmp_path)
    line = refused(["data", "import", "--manifest", str(manifest)], capsys)
    assert line.startswith(f"error: {manifest}: url: {archive.as_uri()}: ") and reason in line
    assert snapshot(tmp_path) == before  # nothing unpacked, nothing recorded, nothing written anywhere here
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "abs-evil.txt").exists()


def test_a_zip_member_leading_outside_is_refused(source: Path, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "parts.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("data.yaml", source.read_text())
        zipped.writestr("../evil.txt", "evil")
    manifest = manifest_for(tmp_path, archive)
    line = refused(["data", "import", "--manifest", str(manifest)], capsys)
    assert "archive member '../evil.txt' points outside its folder; nothing unpacked" in line
    assert not (tmp_path / "datasets" / "parts.download").exists() and not (tmp_path / "evil.txt").exists()


def test_a_checksum_mismatch_is_refused_and_a_match_is_imported_and_reused(
    source: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = yolo_tar(source, tmp_path / "parts.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = manifest_for(tmp_path, archive, sha256="0" * 64)
    line = refused(["data", "import", "--manifest", str(manifest)], capsys)
    assert line == (
        f"error: {manifest}: sha256: the archive from {archive.as_uri()} has sha256 {digest}, not {'0' * 64}; "
        "nothing unpacked"
    )
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["parts.yaml"]

    manifest_for(tmp_path, archive, sha256=digest)
    assert cli.main(["data", "import", "--manifest", str(manifest)]) == 0
    download = tmp_path / "datasets" / "parts.download"
    assert marker_of(download)["sha256"] == digest and marker_of(download)["url"] == archive.as_uri()
    assert json.loads((tmp_path / "datasets" / "parts" / "card.json").read_text())["images"] == 8
    import urllib.request

    def offline(*args: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    assert cli.main(["data", "import", "--manifest", str(manifest)]) == 0  # the finished download is reused
    assert leftovers(tmp_path / "datasets") == []


def test_without_a_checksum_the_import_says_which_to_pin(source: Path, tmp_path: Path, capsys) -> None:
    archive = yolo_tar(source, tmp_path / "parts.tar.gz")
    manifest = manifest_for(tmp_path, archive)
    assert cli.main(["data", "import", "--manifest", str(manifest)]) == 0
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"note: to check later downloads, add to parts.yaml: sha256: {digest}" in capsys.readouterr().out


def test_an_unfinished_download_is_never_reused_nor_deleted(source: Path, tmp_path: Path, capsys) -> None:
    archive = yolo_tar(source, tmp_path / "parts.tar.gz")
    manifest = manifest_for(tmp_path, archive)
    half = user_folder(tmp_path / "datasets" / "parts.download")
    line = refused(["data", "import", "--manifest", str(manifest)], capsys)
    assert line == (
        f"error: {half}: an unfinished download (no {MARKER}); remove that folder yourself and run the import again"
    )
    assert snapshot(half) == {"notes.txt": USER_BYTES} and not (tmp_path / "datasets" / "parts").exists()
