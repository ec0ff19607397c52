"""pipeline/data/coco.py and voc.py: round trips through YOLO, and every problem they report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.annotations import CONVERTED, DROPPED_BOX, IGNORED_FILE, Collection, Problem
from pipeline.data.coco import read_coco, write_coco
from pipeline.data.dataset import DatasetError
from pipeline.data.synth import synthesize
from pipeline.data.voc import read_voc, write_voc
from pipeline.data.yolo import read_yolo, write_yolo


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    """A read-only 20-image synthetic set (16 train, 4 val) read from YOLO layout."""
    summary = synthesize(tmp_path_factory.mktemp("synth") / "defects", images=20, seed=0, size=64)
    collection = read_yolo(summary.data_yaml)
    assert not collection.problems
    return collection


def image(path: Path, width: int = 48, height: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def boxes_by_image(collection: Collection) -> dict[tuple[str, str], list[tuple[float, ...]]]:
    return {
        (s.split, s.image.stem): sorted((b.cls, b.x1, b.y1, b.x2, b.y2) for b in s.boxes) for s in collection.samples
    }


def assert_same_boxes(got: Collection, expected: Collection) -> None:
    assert got.names == expected.names
    got_boxes, expected_boxes = boxes_by_image(got), boxes_by_image(expected)
    assert got_boxes.keys() == expected_boxes.keys()
    for key, boxes in expected_boxes.items():
        assert len(got_boxes[key]) == len(boxes), key
        for a, b in zip(got_boxes[key], boxes):
            assert a[0] == b[0], key
            assert np.allclose(a[1:], b[1:], atol=1.0), (key, a, b)


def only_problem(collection: Collection) -> Problem:
    assert len(collection.problems) == 1, collection.problems
    return collection.problems[0]


# ---- round trips ---------------------------------------------------------------------------------


def test_yolo_coco_yolo_round_trip(synth: Collection, tmp_path: Path) -> None:
    written = write_coco(synth, tmp_path / "coco")
    assert set(written) == {"train", "val"}
    coco = read_coco(tmp_path / "coco")
    assert not coco.problems
    assert all(s.labelled and s.width == 64 for s in coco.samples)
    back = read_yolo(write_yolo(coco, tmp_path / "yolo"))
    assert not back.problems
    assert_same_boxes(back, synth)


def test_coco_writes_relative_file_names_under_its_folder(synth: Collection, tmp_path: Path) -> None:
    yolo = read_yolo(write_yolo(synth, tmp_path / "set"))
    written = write_coco(yolo, tmp_path / "set")
    entry = json.loads(written["val"].read_text())["images"][0]
    assert entry["file_name"].startswith("images/val/")
    assert_same_boxes(
        read_coco(written["val"]), Collection(synth.names, [s for s in synth.samples if s.split == "val"])
    )


def test_voc_hand_written_neu_det_layout_to_yolo(tmp_path: Path) -> None:
    root = tmp_path / "NEU-DET"
    names = ["scratches", "crazing", "patches"]  # not sorted: the given order must be kept
    files = {
        # filename without extension, with a wrong one, and right; coordinates as floats
        "crazing_1": ("crazing_1", [("crazing", 2, 3, 20.5, 30)]),
        "patches_2": ("patches_2.bmp", [("patches", 0, 0, 47, 31), ("scratches", 5.25, 6, 9, 12)]),
        "scratches_3": ("scratches_3.jpg", [("scratches", 10, 1, 40, 8)]),
    }
    for stem, (filename, objects) in files.items():
        image(root / "IMAGES" / f"{stem}.jpg")
        xml = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
            "</bndbox></object>"
            for n, a, b, c, d in objects
        )
        text = f"<annotation><filename>{filename}</filename><size><width>48</width><height>32</height></size>{xml}"
        (root / "ANNOTATIONS").mkdir(exist_ok=True)
        (root / "ANNOTATIONS" / f"{stem}.xml").write_text(text + "</annotation>")
    voc = read_voc(root, names=names)
    assert not voc.problems
    assert voc.names == names
    assert {s.image.name for s in voc.samples} == {f"{stem}.jpg" for stem in files}
    patches = next(s for s in voc.samples if s.image.stem == "patches_2")
    assert [b.ref for b in patches.boxes] == ["object 1", "object 2"]
    assert (patches.boxes[1].x1, patches.boxes[1].cls) == (5.25, 0)
    back = read_yolo(write_yolo(voc, tmp_path / "yolo"))
    assert_same_boxes(back, voc)


def test_yolo_voc_yolo_round_trip(synth: Collection, tmp_path: Path) -> None:
    voc = read_voc(write_voc(synth, tmp_path / "voc"), names=synth.names)
    assert not voc.problems
    assert {s.split for s in voc.samples} == {"train", "val"}  # from ImageSets/Main
    back = read_yolo(write_yolo(voc, tmp_path / "yolo"))
    assert_same_boxes(back, synth)


# ---- COCO problems -------------------------------------------------------------------------------


def write_json(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    categories = categories if categories is not None else [{"id": 1, "name": "pit"}, {"id": 2, "name": "scratch"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def one_image(tmp_path: Path, annotations: list, **entry: object) -> Path:
    image(tmp_path / "images" / "a.jpg")
    fields = {"id": 1, "file_name": "a.jpg", "width": 48, "height": 32, **entry}
    return write_json(tmp_path / "ann.json", [fields], annotations)


def test_coco_single_file_classes_iscrowd_and_background(tmp_path: Path) -> None:
    image(tmp_path / "images" / "b.jpg")
    categories = [{"id": 7, "name": "scratch"}, {"id": 3, "name": "pit"}]  # sorted by id: pit, scratch
    annotations = [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 1}]
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    image(tmp_path / "images" / "a.jpg")
    collection = read_coco(write_json(tmp_path / "export.json", images, annotations, categories))
    assert not collection.problems
    assert collection.names == ["pit", "scratch"]
    a, b = collection.samples
    assert a.split == "train" and a.labelled and a.width == 48
    assert [(x.cls, x.x1, x.y1, x.x2, x.y2, x.ref) for x in a.boxes] == [(1, 1, 2, 11, 7, "annotation 5")]
    assert b.labelled and b.boxes == []  # listed without annotations: a background image


def test_coco_finds_images_by_split_and_base_name(tmp_path: Path) -> None:
    image(tmp_path / "images" / "val" / "a.jpg")
    image(tmp_path / "images" / "b.jpg")
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "some/where/b.jpg"}]
    write_json(tmp_path / "annotations" / "instances_val2017.json", images, [])
    collection = read_coco(tmp_path)
    assert not collection.problems
    assert [(s.image.parent.name, s.split) for s in collection.samples] == [("val", "val"), ("images", "val")]


def test_coco_image_not_found(tmp_path: Path) -> None:
    path = write_json(tmp_path / "ann.json", [{"id": 3, "file_name": "missing.jpg"}], [])
    collection = read_coco(path)
    assert collection.samples == []
    assert only_problem(collection) == Problem(path, "image missing.jpg (id 3) not found", IGNORED_FILE)


def test_coco_unknown_category(tmp_path: Path) -> None:
    path = one_image(tmp_path, [{"id": 17, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}])
    collection = read_coco(path)
    assert collection.samples[0].boxes == []
    assert only_problem(collection) == Problem(path, "annotation 17: category id 9 is not in categories", DROPPED_BOX)


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        ({"bbox": [1, 2, 3]}, "annotation 4: malformed bbox [1, 2, 3] (expected [x, y, w, h] numbers)"),
        ({"bbox": ["1", 2, 3, 4]}, 'annotation 4: malformed bbox ["1", 2, 3, 4] (expected [x, y, w, h] numbers)'),
        ({"image_id": None}, "annotation 4: image id None is not in images"),
        ({"image_id": 99}, "annotation 4: image id 99 is not in images"),
        ({"image_id": "drop"}, "annotation 4: no image_id"),
    ],
)
def test_coco_malformed_annotation(tmp_path: Path, annotation: dict, reason: str) -> None:
    fields = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], **annotation}
    fields = {k: v for k, v in fields.items() if v != "drop"}
    path = one_image(tmp_path, [fields])
    collection = read_coco(path)
    assert collection.samples[0].boxes == []
    assert only_problem(collection) == Problem(path, reason, DROPPED_BOX)


def test_coco_size_in_json_differs(tmp_path: Path) -> None:
    path = one_image(tmp_path, [], width=640, height=480)
    collection = read_coco(path)
    assert (collection.samples[0].width, collection.samples[0].height) == (48, 32)
    reason = "image a.jpg: size in the JSON 640x480 differs from the file's 48x32; the file's size is used"
    assert only_problem(collection) == Problem(path, reason, CONVERTED)


def test_coco_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "ann.json"
    path.write_text('{"images": [],\n  "annotations": [,]}')
    with pytest.raises(DatasetError, match=r"ann\.json: line 2: invalid JSON \(Expecting value\)$"):
        read_coco(path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_coco_missing_list(tmp_path: Path, key: str) -> None:
    spec = {"images": [], "annotations": [], "categories": []}
    del spec[key]
    (tmp_path / "ann.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match=rf"ann\.json: {key}: missing or not a list"):
        read_coco(tmp_path)


def test_coco_files_disagree_on_categories(tmp_path: Path) -> None:
    write_json(tmp_path / "instances_train.json", [], [])
    write_json(tmp_path / "instances_val.json", [], [], [{"id": 1, "name": "pit"}])
    with pytest.raises(DatasetError) as info:
        read_coco(tmp_path)
    assert "instances_val.json: categories" in str(info.value) and "instances_train.json" in str(info.value)


def test_coco_split_not_in_file_name_of_several(tmp_path: Path) -> None:
    write_json(tmp_path / "instances_train.json", [], [])
    write_json(tmp_path / "extra.json", [], [])
    with pytest.raises(DatasetError, match=r"extra\.json: cannot tell the split"):
        read_coco(tmp_path)


# ---- VOC problems --------------------------------------------------------------------------------


def voc_xml(root: Path, stem: str, objects: str, filename: str | None = None, size: str = "48x32") -> Path:
    width, height = size.split("x")
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename or stem + '.jpg'}</filename>"
        f"<size><width>{width}</width><height>{height}</height></size>{objects}</annotation>"
    )
    return path


def voc_object(name: str, box: str = "<xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax>") -> str:
    return f"<object><name>{name}</name><bndbox>{box}</bndbox></object>"


def test_voc_names_background_and_splits(tmp_path: Path) -> None:
    for stem in ("a", "b", "c", "bg"):
        image(tmp_path / "JPEGImages" / f"{stem}.jpg")
    voc_xml(tmp_path, "a", voc_object("scratch") + voc_object("crack"))
    voc_xml(tmp_path, "b", voc_object("pit"))
    voc_xml(tmp_path, "c", "")
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("b\nbg\n")
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")
    collection = read_voc(tmp_path)
    assert not collection.problems
    assert collection.names == ["crack", "pit", "scratch"]  # no class list: sorted
    got = {s.image.stem: (s.split, s.labelled, [b.cls for b in s.boxes]) for s in collection.samples}
    assert got == {
        "a": ("train", True, [2, 0]),
        "b": ("val", True, [1]),
        "c": ("train", True, []),
        "bg": ("val", False, []),
    }


def test_voc_annotation_without_image(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    xml = voc_xml(tmp_path, "a", voc_object("pit"))
    collection = read_voc(tmp_path)
    assert collection.samples == []
    folder = tmp_path / "JPEGImages"
    reason = f"annotation without an image (looked for {folder / 'a.jpg'} and {folder / 'a'}.*)"
    assert only_problem(collection) == Problem(xml, reason, IGNORED_FILE)


def test_voc_class_not_in_list(tmp_path: Path) -> None:
    image(tmp_path / "JPEGImages" / "a.jpg")
    xml = voc_xml(tmp_path, "a", voc_object("pit") + voc_object("pit") + voc_object("foo"))
    collection = read_voc(tmp_path, names=["pit"])
    assert [b.ref for b in collection.samples[0].boxes] == ["object 1", "object 2"]
    assert only_problem(collection) == Problem(xml, "object 3: class 'foo' is not in the class list", DROPPED_BOX)


def test_voc_unreadable_xml_leaves_its_image_out(tmp_path: Path) -> None:
    image(tmp_path / "JPEGImages" / "a.jpg")
    xml = tmp_path / "Annotations" / "a.xml"
    xml.parent.mkdir()
    xml.write_text("<annotation>\n<filename>a.jpg</filename>\n</annotatio>\n")
    collection = read_voc(tmp_path)
    assert collection.samples == []  # not known to be background
    assert only_problem(collection) == Problem(xml, "unreadable XML (line 3: mismatched tag)", IGNORED_FILE)


@pytest.mark.parametrize(
    ("box", "detail"),
    [
        (None, "no bndbox element"),
        ("<xmin>1</xmin><ymin>x</ymin><xmax>3</xmax>", "ymin, ymax missing or not a number"),
    ],
)
def test_voc_malformed_bndbox(tmp_path: Path, box: str | None, detail: str) -> None:
    image(tmp_path / "JPEGImages" / "a.jpg")
    bad = "<object><name>pit</name></object>" if box is None else voc_object("pit", box)
    xml = voc_xml(tmp_path, "a", voc_object("pit") + bad)
    collection = read_voc(tmp_path)
    assert len(collection.samples[0].boxes) == 1
    assert only_problem(collection) == Problem(xml, f"object 2: malformed bndbox ({detail})", DROPPED_BOX)


def test_voc_size_in_xml_differs(tmp_path: Path) -> None:
    image(tmp_path / "JPEGImages" / "a.jpg")
    xml = voc_xml(tmp_path, "a", "", size="200x200")
    collection = read_voc(tmp_path)
    assert (collection.samples[0].width, collection.samples[0].height) == (48, 32)
    reason = "image a.jpg: size in the XML 200x200 differs from the file's 48x32; the file's size is used"
    assert only_problem(collection) == Problem(xml, reason, CONVERTED)


def test_voc_without_annotations_folder(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="no Annotations folder"):
        read_voc(tmp_path)
