"""Real data in: NEU-DET in both its layouts, a short training on a subset, and bad data under skip and fail."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import pytest
import yaml

from pipeline.config import build_config
from pipeline.data.dataset import DatasetError
from pipeline.data.importer import import_manifest, read_source
from pipeline.data.manifest import load_manifest
from pipeline.data.voc import write_voc
from pipeline.training.run import prepare_training, session_env
from pipeline.training.run import train as run_training
from tests.helpers.configs import tiny_config

REPO = Path(__file__).resolve().parents[2]
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"
NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
needs_neu_det = pytest.mark.skipif(not (NEU_DET / "data.yaml").is_file(), reason=f"NEU-DET not at {NEU_DET}")


def manifest_copy(tmp_path: Path, source: Path) -> Path:
    """The repo's NEU-DET manifest, placed in a temporary datasets/ folder and pointing at ``source``."""
    spec = yaml.safe_load((REPO / "datasets" / "neu-det.yaml").read_text())
    spec["path"] = str(source)
    path = tmp_path / "datasets" / "neu-det.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


@needs_neu_det
def test_neu_det_reads_with_every_image_box_and_class() -> None:
    collection = read_source(NEU_DET, "auto")
    assert collection.names == NEU_CLASSES
    assert len(collection.samples) == 1800 and sum(len(s.boxes) for s in collection.samples) == 4189
    assert collection.box_counts() == Counter({1: 1011, 2: 881, 0: 689, 4: 628, 5: 548, 3: 432})


@needs_neu_det
def test_neu_det_imports_with_its_real_problems_reported(tmp_path: Path) -> None:
    result = import_manifest(load_manifest(manifest_copy(tmp_path, NEU_DET)))
    assert result.out == tmp_path / "datasets" / "neu-det"
    # The source has three duplicated label lines and one image that is in both train and val.
    problems = {(Path(p.file).name, p.line, p.action) for p in result.report.errors}
    assert problems == {
        ("crazing_120.txt", 4, "dropped box"),
        ("inclusion_62.txt", 7, "dropped box"),
        ("patches_198.txt", 3, "dropped box"),
        ("patches_101.jpg", None, "skipped image"),
    }
    card = result.card
    assert (card["images"], card["boxes"], card["classes"]) == (1799, 4183, NEU_CLASSES)
    assert card["splits"]["train"]["images"] == 1440 and card["splits"]["val"]["images"] == 359
    assert card["image_sizes"] == {"200x200": 1799} and card["box_sizes"]["tiny"] > 0
    assert card["train_image_side"] == 200
    assert len(list((result.out / "images" / "train").iterdir())) == 1440
    on_disk = json.loads((result.out / "card.json").read_text())
    assert on_disk["content_hash"] == card["content_hash"] and len(card["content_hash"]) == 64
    assert "| crazing |" in (result.out / "card.md").read_text()


@needs_neu_det
def test_neu_det_original_archive_layout_imports_the_same_boxes(tmp_path: Path) -> None:
    """NEU-DET.zip has IMAGES/*.jpg and Pascal VOC ANNOTATIONS/*.xml; the manifest's class order applies."""
    collection = read_source(NEU_DET, "yolo")
    archive = tmp_path / "NEU-DET"
    write_voc(collection, archive)
    (archive / "JPEGImages").rename(archive / "IMAGES")
    (archive / "Annotations").rename(archive / "ANNOTATIONS")
    shutil.rmtree(archive / "ImageSets")  # the archive has no split: the import makes a seeded 80/20 one
    result = import_manifest(load_manifest(manifest_copy(tmp_path, archive)))
    assert result.card["classes"] == NEU_CLASSES
    assert result.report.counts()["images"] + result.report.counts()["skipped_images"] == 1800
    assert any("one split" in note for note in result.notes)
    assert result.card["splits"]["val"]["images"] == pytest.approx(0.2 * result.card["images"], rel=0.05)
    imported = read_source(result.out, "yolo")
    boxes = {s.image.stem: sorted((b.cls, b.x1, b.y1, b.x2, b.y2) for b in s.boxes) for s in imported.samples}
    for sample in collection.samples[::37]:
        if sample.image.stem in boxes:
            original = sorted((b.cls, b.x1, b.y1, b.x2, b.y2) for b in sample.boxes)
            kept = boxes[sample.image.stem]
            assert len(kept) <= len(original)  # duplicates are dropped, nothing else
            for box in kept:
                assert any(b[0] == box[0] and max(abs(x - y) for x, y in zip(b[1:], box[1:])) <= 1 for b in original)


@pytest.mark.slow
@needs_neu_det
def test_a_short_training_on_a_neu_det_subset_runs_the_configured_augmentation(tmp_path: Path) -> None:
    from pipeline.training.loader import albumentations_block
    from pipeline.training.trainer import PipelineTrainer

    manifest = load_manifest(manifest_copy(tmp_path, NEU_DET))
    subset = import_manifest(manifest, images=100)
    assert subset.card["images"] == 100 and set(subset.card["splits"]) == {"train", "val"}
    config = tiny_config(
        tmp_path / "datasets" / "neu-det.yaml",  # a manifest: already imported, so used as it is
        tmp_path / "runs",
        train={"epochs": 1},
        augment={"preset": "surface"},
        tracking={"system_metrics": False},
    )
    prepared = prepare_training(config)
    seen = []
    with session_env(prepared.session_file):
        trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
        trainer.add_callback("on_train_start", lambda t: seen.append(t.train_loader.dataset))
        trainer.train()
    (dataset,) = seen
    block = albumentations_block(dataset)
    assert [type(t).__name__ for t in block.transform.transforms] == [
        "RandomBrightnessContrast",
        "RandomGamma",
        "FastGaussNoise",
        "GaussianBlur",
    ]
    steps = [repr(t) for t in dataset.transforms.transforms]
    assert steps[-2] == "RandomSquareSymmetry(p=1.0)"  # the preset's flips and quarter turns, before Format
    save_dir = prepared.session.save_dir
    rows = (save_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and (save_dir / "weights" / "best.pt").is_file()
    assert prepared.session.dataset["name"] == "neu-det" and prepared.session.dataset["images"]["train"] > 50
    card = json.loads((save_dir / "data" / "card.json").read_text())
    assert card["images"] == 100 and card["classes"] == NEU_CLASSES


def broken_copy(synth_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The synthetic set with one unreadable image and one label line with an unknown class."""
    root = tmp_path / "broken"
    shutil.copytree(synth_data.parent, root)
    broken = sorted((root / "images" / "train").iterdir())[0]
    broken.write_bytes(b"not a png")
    label = sorted((root / "labels" / "train").glob("*.txt"))[1]
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n")
    return root / "data.yaml", broken, label


@pytest.mark.slow
def test_training_skips_bad_data_and_says_so(synth_data: Path, tmp_path: Path) -> None:
    data_yaml, broken, label = broken_copy(synth_data, tmp_path)
    before = label.read_text()
    result = run_training(tiny_config(data_yaml, tmp_path / "runs", train={"epochs": 1}, tracking={"enabled": False}))
    assert len(result.epochs) == 1
    assert any("1 images skipped" in note and "1 boxes dropped" in note for note in result.notes)
    report = json.loads((result.save_dir / "data" / "validation.json").read_text())
    assert report["counts"]["skipped_images"] == 1 and report["counts"]["dropped_boxes"] == 1
    assert {(Path(p["file"]).name, p["line"]) for p in report["problems"]} == {
        (broken.name, None),
        (label.name, len(before.splitlines())),  # the appended line
    }
    # Trained on a cleaned view: links to the good images, the bad line gone; the source is untouched.
    view = result.save_dir / "data"
    assert not (view / "images" / "train" / broken.name).exists()
    assert (view / "images" / "train" / label.with_suffix(".png").name).is_symlink()
    assert "9 0.5" not in (view / "labels" / "train" / label.name).read_text()
    assert label.read_text() == before and broken.read_bytes() == b"not a png"
    assert len(list((view / "images" / "train").iterdir())) == 95
    assert cv2.imread(str(view / "images" / "train" / label.with_suffix(".png").name)) is not None


def test_training_under_fail_stops_before_anything_is_made(synth_data: Path, tmp_path: Path) -> None:
    data_yaml, broken, _ = broken_copy(synth_data, tmp_path)
    config = tiny_config(data_yaml, tmp_path / "runs", data={"policy": "fail"}, tracking={"enabled": False})
    with pytest.raises(DatasetError) as caught:
        prepare_training(config)
    assert str(caught.value).startswith(f"{broken}: unreadable") and "data.policy is fail" in str(caught.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_bad_augmentation_stops_before_anything_is_made(synth_data: Path, tmp_path: Path) -> None:
    config = build_config(
        {
            "data": {"path": str(synth_data)},
            "train": {"project": str(tmp_path / "runs")},
            "augment": {"albumentations": [{"transform": "GaussNoise", "sigma": 1}]},
        }
    )
    with pytest.raises(ValueError, match=r"augment.albumentations\[0\]: GaussNoise: unknown parameter 'sigma'"):
        prepare_training(config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
