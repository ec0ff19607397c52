"""Issue 13, classes 3-6 for the data layer: one test per class and example.

val is the train folder; non-finite and odd numbers; file names and encodings; COCO/VOC identity.
Every test asserts both halves: the data is used, or the report names the file and the reason.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.config import DataConfig
from pipeline.data.annotations import DROPPED_BOX, DROPPED_LINE, NOTE, SKIPPED_IMAGE, Collection
from pipeline.data.coco import read_coco, write_coco
from pipeline.data.dataset import DatasetError, content_hash, load_yaml, read_data_yaml
from pipeline.data.importer import import_dataset
from pipeline.data.split import split_collection
from pipeline.data.training_data import prepare_training_data
from pipeline.data.validate import validate
from pipeline.data.voc import read_voc
from pipeline.data.yolo import read_yolo

BAD_NAME = os.fsdecode(b"bad\xff")  # a file name that is not UTF-8 (Linux keeps the raw byte)
GOOD_LINE = "0 0.5 0.5 0.25 0.25\n"


def image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def yolo_set(root: Path, train: int = 3, val_spec: str = "images/val", val: int = 0) -> Path:
    """``train`` (and ``val``) random images with one box each; ``val_spec`` is what data.yaml says for val."""
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            image(root / "images" / split / f"{split}{i}.png", seed=hash((split, i)) % 1000)
            label = root / "labels" / split / f"{split}{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(GOOD_LINE)
    (root / "images" / "val").mkdir(parents=True, exist_ok=True)
    spec = {"path": ".", "train": "images/train", "val": val_spec, "names": ["a", "b"]}
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root / "data.yaml"


def reasons(problems: list) -> str:
    return "\n".join(str(p) for p in problems)


def coco_doc(images: list, annotations: list, categories: list | None = None) -> dict:
    return {"images": images, "annotations": annotations, "categories": categories or [{"id": 1, "name": "pit"}]}


def write_coco_json(root: Path, doc: dict, name: str = "instances_train.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(doc))  # json.dumps writes NaN/Infinity literals, as some exporters do
    return root / name


def label_values(folder: Path) -> list[float]:
    return [
        float(v) for label in folder.rglob("*.txt") for line in label.read_text().splitlines() for v in line.split()
    ]


# ---- 3. val is the train folder ---------------------------------------------------------------------


@pytest.mark.parametrize("val_spec", ["images/train", "./images/train", "images/../images/train", "images/train/"])
def test_val_is_the_train_folder_keeps_every_image_with_a_note(tmp_path: Path, val_spec: str) -> None:
    report = validate(read_yolo(yolo_set(tmp_path, train=3, val_spec=val_spec)))
    assert dict(report.images) == {"train": 3, "val": 3} and not report.errors, reasons(report.problems)
    (note,) = report.notes
    assert note.action == NOTE and "val is the train folder" in note.reason and "score training images" in note.reason


def test_val_as_absolute_path_of_the_train_folder(tmp_path: Path) -> None:
    report = validate(read_yolo(yolo_set(tmp_path, val_spec=str(tmp_path / "images" / "train"))))
    assert dict(report.images) == {"train": 3, "val": 3} and not report.errors


def test_byte_identical_different_file_in_val_is_still_a_leak(tmp_path: Path) -> None:
    data_yaml = yolo_set(tmp_path, train=2, val=1)
    copy = tmp_path / "images" / "val" / "copy.png"
    copy.write_bytes((tmp_path / "images" / "train" / "train0.png").read_bytes())
    report = validate(read_yolo(data_yaml))
    (leak,) = report.errors
    assert leak.file == copy and leak.action == SKIPPED_IMAGE and "same image as" in leak.reason
    assert dict(report.images) == {"train": 2, "val": 1}


def test_training_data_with_val_the_train_folder(tmp_path: Path) -> None:
    data_yaml = yolo_set(tmp_path / "set", val_spec="./images/train")
    prepared = prepare_training_data(DataConfig(path=str(data_yaml)), tmp_path / "run")
    assert prepared.dataset.images == {"train": 3, "val": 3} and not prepared.cleaned
    assert any("val is the train folder" in note for note in prepared.notes)
    resolved = yaml.safe_load(prepared.dataset.data_yaml.read_text())
    assert resolved["val"] == resolved["train"]  # ultralytics gets a val split


def test_training_data_says_which_split_validation_emptied(tmp_path: Path) -> None:
    data_yaml = yolo_set(tmp_path / "set", train=2, val=1)
    (tmp_path / "set" / "images" / "val" / "val0.png").write_bytes(b"")  # the only val image is broken
    with pytest.raises(DatasetError, match=r"data\.yaml: val: no usable images .* after validation"):
        prepare_training_data(DataConfig(path=str(data_yaml)), tmp_path / "run")


def test_resplitting_val_the_train_folder_keeps_one_copy_per_file(tmp_path: Path) -> None:
    collection = validate(read_yolo(yolo_set(tmp_path, train=4, val_spec="images/train"))).collection
    resplit = split_collection(collection, {"train": 0.5, "val": 0.5}, seed=0)
    assert sorted(s.image.name for s in resplit.samples) == [f"train{i}.png" for i in range(4)]


# ---- 4. non-finite and odd numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0 nan 0.5 0.2 0.2", "must be finite numbers"),
        ("0 0.5 inf 0.2 0.2", "must be finite numbers"),
        ("0 0.5 0.5 -inf 0.2", "must be finite numbers"),
        ("nan 0.5 0.5 0.2 0.2", "class id nan is not an integer"),
        ("inf 0.5 0.5 0.2 0.2", "class id inf is not an integer"),
        ("1e30 0.5 0.5 0.2 0.2", "class id 1e30 is out of range"),
        ("0 1e30 0.5 0.2 0.2", "lies outside"),
        ("0 0.5 0.5 1e300 0.2", "lies outside"),
        ("0 0.5 0.5 -0.2 0.2", "negative-size box"),
        ("0 0.5 0.5 0x1p-2 0.2", "not numbers"),
        ("0 0.5 0.5 0.2 0.2 0.1", "got 6 fields"),
    ],
)
def test_yolo_line_numbers_are_finite_and_messages_short(tmp_path: Path, line: str, reason: str) -> None:
    data_yaml = yolo_set(tmp_path, train=1)
    (tmp_path / "labels" / "train" / "train0.txt").write_text(GOOD_LINE + line + "\n")
    report = validate(read_yolo(data_yaml))
    (problem,) = report.errors
    assert problem.line == 2 and problem.action in {DROPPED_LINE, DROPPED_BOX} and reason in problem.reason
    assert len(str(problem)) < len(str(problem.file)) + 160  # 1e30 is not printed with 30 digits
    assert [len(s.boxes) for s in report.collection.samples] == [1]


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        ({"category_id": True}, "category id true is not an integer"),
        ({"category_id": 1.0}, "category id 1.0 is not an integer"),
        ({"category_id": "1"}, 'category id "1" is not an integer'),
        ({"bbox": [float("nan"), 1, 2, 2]}, "is not finite"),
        ({"bbox": [1, 1, float("inf"), 2]}, "is not finite"),
        ({"bbox": [1, 1, 10**400, 2]}, "is not finite"),
        ({"bbox": [1, True, 2, 2]}, "malformed bbox"),
        ({"bbox": [1, "1", 2, 2]}, "malformed bbox"),
        ({"image_id": True}, "image id True is not in images"),
    ],
)
def test_coco_numbers_are_finite_and_of_the_right_type(tmp_path: Path, annotation: dict, reason: str) -> None:
    image(tmp_path / "a.png")
    ann = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], **annotation}
    path = write_coco_json(tmp_path, coco_doc([{"id": 1, "file_name": "a.png"}], [ann]))
    collection = read_coco(path)
    (problem,) = collection.problems
    assert problem.action == DROPPED_BOX and reason in problem.reason and problem.reason.startswith("annotation 4")
    assert collection.samples[0].boxes == []


def test_coco_category_id_true_is_not_a_category(tmp_path: Path) -> None:
    path = write_coco_json(tmp_path, coco_doc([], [], [{"id": True, "name": "pit"}]))
    with pytest.raises(DatasetError, match="categories: every entry needs an integer id and a name"):
        read_coco(path)


def test_coco_negative_size_box_is_dropped(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    ann = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [10, 10, -5, 4]}
    report = validate(read_coco(write_coco_json(tmp_path, coco_doc([{"id": 1, "file_name": "a.png"}], [ann]))))
    (problem,) = report.errors
    assert "annotation 4: negative-size box" in problem.reason


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e400", "x"])
def test_voc_corner_not_a_finite_number(tmp_path: Path, value: str) -> None:
    image(tmp_path / "JPEGImages" / "a.png")
    xml = tmp_path / "Annotations" / "a.xml"
    xml.parent.mkdir(parents=True)
    box = f"<xmin>{value}</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
    xml.write_text(
        f"<annotation><filename>a.png</filename><object><name>pit</name><bndbox>{box}</bndbox></object></annotation>"
    )
    collection = read_voc(tmp_path, names=["pit"])
    (problem,) = collection.problems
    assert problem.file == xml and "object 1: malformed bndbox (xmin missing or not a number)" == problem.reason
    assert collection.samples[0].boxes == []


def test_import_never_writes_a_non_finite_box(tmp_path: Path) -> None:
    image(tmp_path / "src" / "a.png")
    annotations = [
        {"id": i, "image_id": 1, "category_id": 1, "bbox": bbox}
        for i, bbox in enumerate([[float("nan"), 1, 2, 2], [1, 1, float("inf"), 2], [1, 1, 4, 4]])
    ]
    write_coco_json(tmp_path / "src", coco_doc([{"id": 1, "file_name": "a.png"}], annotations))
    result = import_dataset(tmp_path / "src", "n", tmp_path / "out", splits={"train": 1.0})
    values = label_values(tmp_path / "out" / "labels")
    assert len(values) == 5 and all(math.isfinite(v) for v in values)
    assert result.report.counts()["dropped_boxes"] == 2


# ---- 5. file names and encodings --------------------------------------------------------------------


def bad_name_set(root: Path) -> Path:
    data_yaml = yolo_set(root, train=2, val=1)
    image(root / "images" / "train" / f"{BAD_NAME}.png", seed=7)
    (root / "labels" / "train" / f"{BAD_NAME}.txt").write_text(GOOD_LINE)
    return data_yaml


def test_non_utf8_image_name_in_validate_stats_and_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_yaml = bad_name_set(tmp_path / "set")
    assert main(["data", "validate", str(data_yaml), "--report", str(tmp_path / "report.json")]) == 0
    printed = capsys.readouterr().out
    assert "bad\\xff.png: file name is not UTF-8: written as bad_xff.png (renamed)" in printed
    files = [p["file"] for p in json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["problems"]]
    assert any(file.endswith("bad\\xff.png") for file in files)
    assert main(["data", "stats", str(data_yaml)]) == 0
    assert "4 images" in capsys.readouterr().out
    assert main(["data", "import", str(data_yaml), "--name", "odd", "--out", str(tmp_path / "datasets")]) == 0
    imported = tmp_path / "datasets" / "odd"
    assert sorted(p.name for p in (imported / "images" / "train").iterdir()) == [
        "bad_xff.png",
        "train0.png",
        "train1.png",
    ]
    assert (imported / "labels" / "train" / "bad_xff.txt").read_text() == "0 0.500000 0.500000 0.250000 0.250000\n"
    assert "bad\\xff.png" in capsys.readouterr().out


def test_content_hash_with_a_non_utf8_name(tmp_path: Path) -> None:
    assert len(content_hash(read_data_yaml(bad_name_set(tmp_path)).splits)) == 64


def test_training_data_writes_a_non_utf8_name_under_a_safe_one(tmp_path: Path) -> None:
    prepared = prepare_training_data(DataConfig(path=str(bad_name_set(tmp_path / "set"))), tmp_path / "run")
    assert prepared.cleaned and prepared.dataset.images == {"train": 3, "val": 1}
    names = sorted(p.name for p in (prepared.folder / "images" / "train").iterdir())
    assert names == ["bad_xff.png", "train0.png", "train1.png"]
    assert all(name.encode("utf-8") for name in names)
    assert any("written as bad_xff.png" in note for note in prepared.notes)


def test_non_utf8_label_file_reports_its_lines(tmp_path: Path) -> None:
    data_yaml = yolo_set(tmp_path, train=1)
    (tmp_path / "labels" / "train" / "train0.txt").write_bytes(GOOD_LINE.encode() + b"1 0.5 0.5 0.1\xff 0.1\n")
    report = validate(read_yolo(data_yaml))
    (problem,) = report.errors
    assert (problem.line, problem.action) == (2, DROPPED_LINE) and "not UTF-8 text (byte 0xff)" in problem.reason
    (sample,) = report.collection.samples
    assert sample.labelled and len(sample.boxes) == 1  # not silently a background image


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_label_file_with_a_byte_order_mark_keeps_its_first_line(tmp_path: Path, encoding: str) -> None:
    data_yaml = yolo_set(tmp_path, train=1)
    (tmp_path / "labels" / "train" / "train0.txt").write_bytes((GOOD_LINE + "1 0.2 0.2 0.1 0.1\n").encode(encoding))
    report = validate(read_yolo(data_yaml))
    assert not report.problems and [len(s.boxes) for s in report.collection.samples] == [2]


def test_non_utf8_data_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "data.yaml"
    path.write_bytes(b"train: images/train\nnames: [caf\xe9]\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: line 2: byte 0xe9 is not UTF-8"):
        load_yaml(path)
    assert main(["data", "validate", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_data_yaml_with_a_byte_order_mark(tmp_path: Path) -> None:
    data_yaml = yolo_set(tmp_path)
    data_yaml.write_bytes(b"\xef\xbb\xbf" + data_yaml.read_bytes())
    assert read_data_yaml(data_yaml).names == {0: "a", 1: "b"}


# ---- 6. COCO/VOC identity ---------------------------------------------------------------------------


def box(ann_id: int, image_id: object, x: int) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, 1, 4, 4]}


def test_coco_repeated_image_id_with_different_files_is_named(tmp_path: Path) -> None:
    image(tmp_path / "a.png", seed=1), image(tmp_path / "b.png", seed=2), image(tmp_path / "c.png", seed=3)
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}, {"id": 2, "file_name": "c.png"}]
    collection = read_coco(write_coco_json(tmp_path, coco_doc(images, [box(1, 1, 1), box(2, 2, 1)])))
    assert [s.image.name for s in collection.samples] == ["c.png"]  # nothing imported twice, nothing guessed
    skipped = [p for p in collection.problems if p.action == SKIPPED_IMAGE]
    assert len(skipped) == 2 and all(
        "image id 1 is used by the entries at index 0 (a.png) and 1 (b.png)" in p.reason for p in skipped
    )
    assert {p.reason.split("image ")[-1] for p in skipped} == {
        "a.png left out under this id",
        "b.png left out under this id",
    }


def test_coco_repeated_image_id_for_the_same_file_is_one_image(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "./a.png"}]
    collection = read_coco(write_coco_json(tmp_path, coco_doc(images, [box(1, 1, 1)])))
    (sample,) = collection.samples
    assert len(sample.boxes) == 1
    (note,) = collection.problems
    assert note.action == NOTE and "image id 1 is listed 2 times" in note.reason


def test_coco_same_file_under_two_ids_is_merged(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}]
    collection = read_coco(write_coco_json(tmp_path, coco_doc(images, [box(1, 1, 1), box(2, 2, 10), box(3, 2, 1)])))
    (sample,) = collection.samples
    assert sorted(b.x1 for b in sample.boxes) == [1, 1, 10]
    (note,) = collection.problems
    assert note.action == NOTE and "image a.png is listed under ids 1, 2: one image" in note.reason
    report = validate(collection)  # the box given under both ids is one box
    assert len(report.collection.samples[0].boxes) == 2 and "duplicate box" in reasons(report.errors)


@pytest.mark.parametrize("file_name", ["../secret.png", "images/../../secret.png", "{outside}"])
def test_coco_file_name_outside_the_dataset_is_refused(tmp_path: Path, file_name: str) -> None:
    secret = image(tmp_path / "secret.png", seed=5)
    file_name = file_name.format(outside=secret)
    root = tmp_path / "set"
    image(root / "images" / "a.png")
    images = [{"id": 1, "file_name": file_name}, {"id": 2, "file_name": "a.png"}]
    collection = read_coco(write_coco_json(root, coco_doc(images, [box(1, 1, 1)])))
    assert [s.image.name for s in collection.samples] == ["a.png"]
    (problem,) = collection.problems
    assert f"image {file_name} (id 1) points outside the dataset folder {root}; refused" == problem.reason
    result = import_dataset(root, "n", tmp_path / "out", splits={"train": 1.0})
    copied = {p.read_bytes() for p in (tmp_path / "out" / "images").rglob("*.png")}
    assert secret.read_bytes() not in copied and result.card["images"] == 1


def test_coco_absolute_file_name_inside_the_dataset_is_used(tmp_path: Path) -> None:
    inside = image(tmp_path / "images" / "a.png")
    collection = read_coco(write_coco_json(tmp_path, coco_doc([{"id": 1, "file_name": str(inside)}], [])))
    assert [s.image for s in collection.samples] == [inside] and not collection.problems


def test_coco_export_copies_images_from_elsewhere_so_it_reads_back(tmp_path: Path) -> None:
    source = validate(read_yolo(yolo_set(tmp_path / "set", train=2))).collection
    written = write_coco(source, tmp_path / "coco")
    assert not json.loads(written["train"].read_text())["images"][0]["file_name"].startswith("/")
    back = read_coco(tmp_path / "coco")
    assert not back.problems and len(back.samples) == 2


@pytest.mark.parametrize("filename", ["../../secret.png", "{outside}"])
def test_voc_filename_outside_the_dataset_is_refused(tmp_path: Path, filename: str) -> None:
    secret = image(tmp_path / "secret.png", seed=5)
    filename = filename.format(outside=secret)
    root = tmp_path / "voc"
    image(root / "JPEGImages" / "a.png")
    xml = root / "Annotations" / "a.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text(f"<annotation><filename>{filename}</filename></annotation>")
    collection = read_voc(root, names=["pit"])
    assert [s.image for s in collection.samples] == [root / "JPEGImages" / "a.png"]  # found by the XML's own name
    (problem,) = collection.problems
    assert (
        problem.file == xml
        and f"filename {filename!r} points outside" in problem.reason
        and "refused" in problem.reason
    )


def test_collection_of_same_file_in_two_coco_splits_is_kept_in_both(tmp_path: Path) -> None:
    image(tmp_path / "images" / "a.png")
    write_coco_json(tmp_path, coco_doc([{"id": 1, "file_name": "a.png"}], [box(1, 1, 1)]), "instances_train.json")
    write_coco_json(tmp_path, coco_doc([{"id": 9, "file_name": "a.png"}], [box(1, 9, 1)]), "instances_val.json")
    report = validate(read_coco(tmp_path))
    assert dict(report.images) == {"train": 1, "val": 1} and not report.errors
    assert [n.reason.split(" (")[0] for n in report.notes] == ["val is the train folder"]


def test_empty_collection_is_valid() -> None:
    assert validate(Collection(["a"], [])).counts()["images"] == 0
