"""One test per kind of bad input: the report names the file (and line) and the reason; skip goes on, fail stops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.data.annotations import CONVERTED, COUNTED, DROPPED_BOX, DROPPED_LINE, IGNORED_FILE, SKIPPED_IMAGE
from pipeline.data.dataset import DatasetError
from pipeline.data.images import to_8bit
from pipeline.data.validate import validate
from pipeline.data.yolo import read_yolo, write_yolo

GOOD_LINE = "0 0.5 0.5 0.25 0.25\n"


def make_dataset(root: Path, per_split: int = 2) -> Path:
    """A clean 2-class YOLO dataset of 64x48 JPEGs: ``per_split`` images in train and in val, one box each."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)  # random: no two images alike
            cv2.imwrite(str(root / "images" / split / f"{split}{i}.jpg"), image)
            (root / "labels" / split / f"{split}{i}.txt").write_text(GOOD_LINE)
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": ["a", "b"]})
    )
    return data_yaml


def add_image(root: Path, name: str, label: str | None, split: str = "train") -> tuple[Path, Path]:
    image = root / "images" / split / name
    cv2.imwrite(str(image), np.full((48, 64, 3), 200, np.uint8))
    label_path = root / "labels" / split / f"{Path(name).stem}.txt"
    if label is not None:
        label_path.write_text(label)
    return image, label_path


def only_problem(report, action: str):
    found = [p for p in report.problems if p.action == action]
    assert len(found) == 1, [str(p) for p in report.problems]
    return found[0]


def test_clean_data_has_no_problems(tmp_path: Path) -> None:
    report = validate(read_yolo(make_dataset(tmp_path)))
    assert report.problems == [] and report.counts()["images"] == 4 and report.counts()["boxes"] == 4
    assert report.summary() == "4 images, 4 boxes, 0 backgrounds; no problems"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "zero-byte file"),
        (b"this is not an image at all", "unreadable"),
    ],
)
def test_unreadable_and_zero_byte_images_are_skipped(tmp_path: Path, content: bytes, reason: str) -> None:
    data_yaml = make_dataset(tmp_path)
    bad, _ = add_image(tmp_path, "bad.jpg", GOOD_LINE)
    bad.write_bytes(content)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, SKIPPED_IMAGE)
    assert problem.file == bad and reason in problem.reason
    assert report.counts()["images"] == 4 and report.counts()["skipped_images"] == 1
    assert bad not in {s.image for s in report.collection.samples}


def test_truncated_jpeg_is_skipped(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    bad, _ = add_image(tmp_path, "cut.jpg", GOOD_LINE)
    bad.write_bytes(bad.read_bytes()[:-200])
    problem = only_problem(validate(read_yolo(data_yaml)), SKIPPED_IMAGE)
    assert problem.file == bad and "truncated" in problem.reason


def test_16_bit_images_are_converted_by_the_depth_they_use(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    image = tmp_path / "images" / "train" / "deep.png"
    values = np.tile(np.linspace(0, 4095, 64), (48, 1)).astype(np.uint16)  # 12-bit data in a 16-bit file
    cv2.imwrite(str(image), values)
    (tmp_path / "labels" / "train" / "deep.txt").write_text(GOOD_LINE)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, CONVERTED)
    assert problem.file == image and "high-bit-depth" in problem.reason and not problem.is_error
    converted = to_8bit(image)
    assert converted.dtype == np.uint8 and converted.max() == 255 and converted.min() == 0  # full range, not >> 8

    out = write_yolo(report.collection, tmp_path / "out").parent
    written = cv2.imread(str(out / "images" / "train" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8 and written.max() == 255


@pytest.mark.parametrize(("mode", "reason"), [("RGBA", "alpha"), ("P", "palette")])
def test_alpha_and_palette_images_are_converted(tmp_path: Path, mode: str, reason: str) -> None:
    data_yaml = make_dataset(tmp_path)
    image = tmp_path / "images" / "train" / f"odd_{mode}.png"
    Image.new("RGB", (64, 48), (10, 120, 200)).convert(mode).save(image)
    (tmp_path / "labels" / "train" / f"odd_{mode}.txt").write_text(GOOD_LINE)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, CONVERTED)
    assert problem.file == image and reason in problem.reason
    assert to_8bit(image).shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("lines", "line", "reason", "action"),
    [
        (
            "0 0.5 0.5 0.25 0.25\n7 0.5 0.5 0.1 0.1\n",
            2,
            "class id 7 is out of range (the dataset has classes 0..1)",
            DROPPED_BOX,
        ),
        ("-1 0.5 0.5 0.1 0.1\n", 1, "class id -1 is out of range", DROPPED_BOX),
        ("0 0.5 0.5 0.25 0.25\n1 1.4 0.5 0.2 0.2\n", 2, "lies outside the 64x48 image", DROPPED_BOX),
        ("1 0.5 0.5 0.0 0.2\n", 1, "zero-area box", DROPPED_BOX),
        ("0 0.5 0.5 0.25\n", 1, "malformed line: expected 'class cx cy w h', got 4 fields", DROPPED_LINE),
        ("0 0.5 abc 0.25 0.25\n", 1, "malformed line: not numbers", DROPPED_LINE),
        ("0.5 0.5 0.5 0.25 0.25\n", 1, "class id 0.5 is not an integer", DROPPED_LINE),
        (
            "0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.1\n0 0.5 0.5 0.25 0.25\n",
            3,
            "duplicate box (same as line 1)",
            DROPPED_BOX,
        ),
    ],
)
def test_bad_label_lines_are_reported_with_file_and_line(
    tmp_path: Path, lines: str, line: int, reason: str, action: str
) -> None:
    data_yaml = make_dataset(tmp_path)
    _, label = add_image(tmp_path, "odd.jpg", lines)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, action)
    assert (problem.file, problem.line) == (label, line) and reason in problem.reason
    assert str(problem).startswith(f"{label}:{line}: ")
    kept = next(s for s in report.collection.samples if s.image.name == "odd.jpg")
    assert len(kept.boxes) == len([x for x in lines.splitlines() if x]) - 1  # only the bad line is lost
    assert report.counts()["images"] == 5  # the image itself is kept


def test_a_box_just_over_the_border_is_clipped_not_dropped(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    add_image(tmp_path, "edge.jpg", "0 0.9 0.5 0.21 0.2\n")  # 0.6 px past the right edge: writer rounding
    report = validate(read_yolo(data_yaml))
    assert report.problems == []
    (box,) = next(s for s in report.collection.samples if s.image.name == "edge.jpg").boxes
    assert box.x2 == 64


def test_label_without_image_is_reported_and_ignored(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    orphan = tmp_path / "labels" / "train" / "ghost.txt"
    orphan.write_text(GOOD_LINE)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, IGNORED_FILE)
    assert problem.file == orphan and problem.reason == "label file without an image"
    assert report.counts()["ignored_files"] == 1 and report.counts()["images"] == 4


def test_image_without_label_is_a_counted_background(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    image, _ = add_image(tmp_path, "plain.jpg", None, split="val")
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, COUNTED)
    assert problem.file == image and "background" in problem.reason and not problem.is_error
    assert report.backgrounds == {"val": 1} and report.counts()["images"] == 5 and report.errors == []


def test_the_same_image_in_two_splits_is_kept_in_train_only(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    leaked = tmp_path / "images" / "val" / "copy.jpg"
    leaked.write_bytes((tmp_path / "images" / "train" / "train0.jpg").read_bytes())
    (tmp_path / "labels" / "val" / "copy.txt").write_text(GOOD_LINE)
    report = validate(read_yolo(data_yaml))
    problem = only_problem(report, SKIPPED_IMAGE)
    assert problem.file == leaked and "same image as" in problem.reason and "train0.jpg in train" in problem.reason
    assert report.images == {"train": 2, "val": 2}


def test_skip_goes_on_with_the_right_counts(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    add_image(tmp_path, "a.jpg", "5 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")  # one bad box
    add_image(tmp_path, "b.jpg", "0 0.5\n")  # one malformed line
    (tmp_path / "images" / "train" / "c.jpg").write_bytes(b"")  # one broken image
    add_image(tmp_path, "d.jpg", None)  # one background
    counts = validate(read_yolo(data_yaml), "skip").counts()
    assert counts == {
        "images": 7,
        "boxes": 5,
        "backgrounds": 2,  # d.jpg, and b.jpg, whose only line was dropped: both train as images with no box
        "skipped_images": 1,
        "dropped_boxes": 1,
        "dropped_lines": 1,
        "ignored_files": 0,
        "converted_images": 0,
    }


def test_fail_stops_with_one_line_naming_the_first_problem(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    _, label = add_image(tmp_path, "a.jpg", "0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images" / "val" / "broken.png").write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        validate(read_yolo(data_yaml), "fail")
    message = str(caught.value)
    assert "\n" not in message and "data.policy is fail" in message and "(and 1 more problems)" in message
    assert f"{label}:2: class id 9 is out of range" in message or "broken.png: zero-byte file" in message


def test_notes_alone_do_not_fail(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    add_image(tmp_path, "plain.jpg", None)  # a background is not an error
    assert validate(read_yolo(data_yaml), "fail").counts()["backgrounds"] == 1


def test_an_empty_label_file_counts_as_a_background(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path)
    add_image(tmp_path, "empty.jpg", "")  # a defect-free part labelled so: an empty label file
    add_image(tmp_path, "unlabelled.jpg", None)
    report = validate(read_yolo(data_yaml))
    assert report.counts()["backgrounds"] == 2 and report.problems[0].file.name == "unlabelled.jpg"
