"""pipeline/data/labelstudio.py's reader: Label Studio exports back into the dataset form, every loss named."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.annotations import DROPPED_BOX, NOTE, SKIPPED_IMAGE, Collection, Problem
from pipeline.data.dataset import DatasetError
from pipeline.data.importer import detect_format, import_dataset, read_source
from pipeline.data.labelstudio import LabeledBox, read_labelstudio, task, write_tasks
from pipeline.data.validate import validate
from pipeline.data.yolo import read_yolo

CLASSES = ["scratch", "pit", "patch"]


def image(path: Path, width: int = 64, height: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def rectangle(label: str, x: float, y: float, w: float, h: float, **extra: object) -> dict:
    """A rectanglelabels result in percent, as Label Studio exports it (100x100 px images: percent = px)."""
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": extra.pop("rotation", 0), "rectanglelabels": [label]}
    sizes = {"original_width": 100, "original_height": 100, **extra}  # None: left out, as some exports do
    return {
        "id": f"r{label}",
        "type": "rectanglelabels",
        "value": value,
        **{k: v for k, v in sizes.items() if v is not None},
    }


def export_of(path: Path, tasks: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def by_name(collection: Collection) -> dict[str, list[tuple]]:
    return {s.image.name: [(b.cls, b.x1, b.y1, b.x2, b.y2) for b in s.boxes] for s in collection.samples}


def problems(collection: Collection, action: str) -> list[str]:
    return [p.reason for p in collection.problems if p.action == action]


# ---- the round trip: task() / write_tasks() out, read_labelstudio() back -----------------------


TRUTH = {
    "a.png": (64, 48, [LabeledBox("scratch", 3, 4, 40, 9), LabeledBox("patch", 10.5, 20.25, 63, 47)]),
    "b.png": (
        100,
        80,
        [LabeledBox("pit", 0, 0, 17, 13), LabeledBox("pit", 50, 40, 99.5, 79), LabeledBox("scratch", 1, 70, 98, 75)],
    ),
    "c.png": (37, 53, []),  # reviewed: no defect, a background image
}


@pytest.fixture
def written(tmp_path: Path) -> Path:
    tasks = []
    for name, (width, height, boxes) in TRUTH.items():
        image(tmp_path / "images" / name, width, height)
        model = [LabeledBox(b.label, b.x1 + 1, b.y1, b.x2, b.y2, score=0.4) for b in boxes]
        tasks.append(task(f"images/{name}", width, height, truth=boxes, predictions=model, model_version="m1"))
    return write_tasks(tmp_path / "export.json", tasks)


def test_round_trip_keeps_every_box_within_a_pixel_and_the_classes(written: Path) -> None:
    collection = read_labelstudio(written, names=CLASSES)
    assert collection.names == CLASSES
    assert not [p for p in collection.problems if p.is_error]
    assert sorted(by_name(collection)) == sorted(TRUTH)
    got = by_name(collection)
    for name, (width, height, boxes) in TRUTH.items():
        sample = next(s for s in collection.samples if s.image.name == name)
        assert (sample.width, sample.height, sample.labelled) == (width, height, True)
        assert len(got[name]) == len(boxes), name
        for (cls, *corners), truth in zip(got[name], boxes):
            assert CLASSES[cls] == truth.label
            assert np.allclose(corners, (truth.x1, truth.y1, truth.x2, truth.y2), atol=1.0), (name, corners, truth)


def test_round_trip_through_the_yolo_layout(written: Path, tmp_path: Path) -> None:
    result = import_dataset(written, "reviewed", tmp_path / "out", classes=CLASSES, splits={"train": 1.0})
    assert result.card["images"] == 3 and result.card["boxes"] == 5
    assert result.card["boxes_per_class"] == {"scratch": 2, "pit": 2, "patch": 1}
    back = read_yolo(result.data_yaml)
    assert back.names == CLASSES
    labels = {s.image.name: s for s in back.samples}
    assert labels["c.png"].labelled and labels["c.png"].boxes == []  # an empty label file, not a missing one
    for box, truth in zip(labels["b.png"].boxes, TRUTH["b.png"][2]):
        assert np.allclose((box.x1, box.y1, box.x2, box.y2), (truth.x1, truth.y1, truth.x2, truth.y2), atol=1.0)


def test_without_classes_the_labels_are_sorted_by_name(written: Path) -> None:
    collection = read_labelstudio(written)
    assert collection.names == ["patch", "pit", "scratch"]
    assert by_name(collection)["a.png"][0][0] == 2  # scratch


def test_auto_detects_an_export_from_a_coco_file(written: Path, tmp_path: Path) -> None:
    coco = tmp_path / "instances_train.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert detect_format(written) == "labelstudio"
    assert detect_format(coco) == "coco"
    assert read_source(written, "auto").names == ["patch", "pit", "scratch"]


# ---- image references ----------------------------------------------------------------------------


def test_the_reference_kinds(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name in ("up.png", "web.png", "local.png"):
        image(store / "deep" / name)
    image(tmp_path / "export" / "rel" / "here.png")
    image(store / "sub" / "served.png")
    box = [rectangle("pit", 10, 10, 20, 20)]
    refs = [
        "rel/here.png",  # relative to the export's folder
        "/data/upload/7/1a2b3c4d-up.png",  # Label Studio's upload prefix, matched in --images
        "https://example.com/bucket/web.png?X-Amz-Signature=abc",  # a URL, matched by its last component
        "/data/local-files/?d=sub%2Fserved.png",  # local storage, relative to --images
        f"/data/local-files/?d={(store / 'deep' / 'local.png').as_posix()}",  # local storage, absolute
    ]
    tasks = [{"id": i + 1, "data": {"image": ref}, "annotations": [{"result": box}]} for i, ref in enumerate(refs)]
    collection = read_labelstudio(export_of(tmp_path / "export" / "export.json", tasks), names=CLASSES, images=store)
    assert not [p for p in collection.problems if p.is_error]
    assert [s.image for s in collection.samples] == [
        tmp_path / "export" / "rel" / "here.png",
        store / "deep" / "up.png",
        store / "deep" / "web.png",
        store / "sub" / "served.png",
        store / "deep" / "local.png",
    ]
    assert all(len(s.boxes) == 1 for s in collection.samples)


def test_uploads_and_urls_need_images_dir(tmp_path: Path) -> None:
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/7/1a2b3c4d-up.png"}, "annotations": [{"result": []}]},
        {"id": 2, "data": {"image": "http://host/x/web.png"}, "annotations": [{"result": []}]},
    ]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks))
    assert collection.samples == []
    assert problems(collection, SKIPPED_IMAGE) == [
        "task 1: image /data/upload/7/1a2b3c4d-up.png: not found: an upload reference is matched by its file name "
        "(up.png) in --images DIR",
        "task 2: image http://host/x/web.png: not found: a URL reference is matched by its file name (web.png) in "
        "--images DIR",
    ]


def test_an_unresolvable_image_and_an_unknown_label_are_named_and_the_rest_import(tmp_path: Path) -> None:
    image(tmp_path / "ok.png", 100, 100)
    image(tmp_path / "two.png", 100, 100)
    tasks = [
        {"id": 11, "data": {"image": "ok.png"}, "annotations": [{"result": [rectangle("pit", 10, 10, 5, 5)]}]},
        {"id": 12, "data": {"image": "gone.png"}, "annotations": [{"result": [rectangle("pit", 1, 1, 5, 5)]}]},
        {
            "id": 13,
            "data": {"image": "two.png"},
            "annotations": [{"result": [rectangle("crack", 1, 1, 5, 5), rectangle("patch", 20, 30, 10, 10)]}],
        },
    ]
    export = export_of(tmp_path / "export.json", tasks)
    collection = read_labelstudio(export, names=CLASSES)
    assert by_name(collection) == {"ok.png": [(1, 10, 10, 15, 15)], "two.png": [(2, 20, 30, 30, 40)]}
    assert problems(collection, SKIPPED_IMAGE) == [f"task 12: image gone.png: not found (looked under {tmp_path})"]
    assert problems(collection, DROPPED_BOX) == [
        "task 13 result rcrack: label 'crack' is not in the class list (--classes)"
    ]
    assert all(p.file == export for p in collection.problems)
    report = validate(collection)
    assert report.counts()["skipped_images"] == 1 and report.counts()["dropped_boxes"] == 1
    assert report.counts()["images"] == 2


def test_a_reference_leading_out_is_refused_even_when_the_file_exists(tmp_path: Path) -> None:
    image(tmp_path / "outside.png")
    tasks = [{"id": 1, "data": {"image": "../outside.png"}, "annotations": [{"result": []}]}]
    collection = read_labelstudio(export_of(tmp_path / "export" / "export.json", tasks))
    assert collection.samples == []
    assert problems(collection, SKIPPED_IMAGE) == [
        f"task 1: image ../outside.png: points outside {tmp_path / 'export'}; refused"
    ]


def test_a_name_two_files_share_is_not_guessed(tmp_path: Path) -> None:
    image(tmp_path / "store" / "a" / "same.png")
    image(tmp_path / "store" / "b" / "same.png")
    image(tmp_path / "store" / "b" / "other.png")
    tasks = [
        {"id": 1, "data": {"image": "https://h/same.png"}, "annotations": [{"result": []}]},
        {"id": 2, "data": {"image": "https://h/other.png"}, "annotations": [{"result": []}]},
    ]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), images=tmp_path / "store")
    assert [s.image.name for s in collection.samples] == ["other.png"]
    (reason,) = problems(collection, SKIPPED_IMAGE)
    assert reason.startswith("task 1: image https://h/same.png: 2 files under ")
    assert reason.endswith("are named same.png (a/same.png, b/same.png): not guessed")


def test_a_missing_images_folder_is_one_line(tmp_path: Path) -> None:
    export = export_of(tmp_path / "export.json", [])
    with pytest.raises(DatasetError, match=r"^--images .*nowhere: no such folder$"):
        read_labelstudio(export, images=tmp_path / "nowhere")
    with pytest.raises(
        DatasetError, match=r"^--images .*: a folder of images goes with --format labelstudio, not coco"
    ):
        read_source(export, "coco", image_folder=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", r"export\.json: line 1: invalid JSON"),
        ('{"images": []}', r"export\.json: not a Label Studio JSON export \(expected a list of tasks\)$"),
    ],
)
def test_an_unreadable_export_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "export.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_labelstudio(tmp_path / "export.json")


# ---- annotations ---------------------------------------------------------------------------------


def test_cancelled_annotations_are_ignored_and_the_latest_is_used(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 100, 100)
    image(tmp_path / "b.png", 100, 100)
    image(tmp_path / "c.png", 100, 100)
    old, new, cancelled = (
        {"id": 1, "updated_at": "2024-05-01T10:00:00.000000Z", "result": [rectangle("pit", 1, 1, 5, 5)]},
        {"id": 2, "updated_at": "2024-05-02T10:00:00.000000Z", "result": [rectangle("patch", 50, 50, 10, 10)]},
        {
            "id": 3,
            "updated_at": "2024-06-01T00:00:00Z",
            "was_cancelled": True,
            "result": [rectangle("scratch", 0, 0, 9, 9)],
        },
    )
    tasks = [
        {"id": 1, "data": {"image": "a.png"}, "annotations": [cancelled, new, old]},
        {"id": 2, "data": {"image": "b.png"}, "annotations": [cancelled]},
        {
            "id": 3,
            "data": {"image": "c.png"},
            "annotations": [],
            "predictions": [{"result": [rectangle("pit", 1, 1, 5, 5)]}],
        },
    ]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    assert by_name(collection) == {"a.png": [(2, 50, 50, 60, 60)]}
    assert problems(collection, NOTE) == ["task 1: 2 annotations not cancelled; the latest (id 2) is used"]
    assert problems(collection, SKIPPED_IMAGE) == [
        "task 2: image b.png: every annotation (1) was cancelled or malformed",
        "task 3: image c.png: no annotation (not reviewed yet)",
    ]


def test_rotation_keeps_the_axis_aligned_bounding_box(tmp_path: Path) -> None:
    image(tmp_path / "r.png", 100, 100)
    # 30 x 10 px at (50, 20), turned 90 degrees clockwise about its top-left corner: it now spans
    # x 40..50 and y 20..50.
    results = [rectangle("scratch", 50, 20, 30, 10, rotation=90, original_width=None, original_height=None)]
    tasks = [{"id": 1, "data": {"image": "r.png"}, "annotations": [{"result": results}]}]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    ((cls, *corners),) = by_name(collection)["r.png"]
    assert cls == 0 and np.allclose(corners, (40, 20, 50, 50))
    assert problems(collection, NOTE) == [
        "task 1: original_width/original_height missing: the image's size 100x100 is used",
        "task 1 result rscratch: rotated 90 degrees: its axis-aligned bounding box is used",
    ]


def test_rotation_on_a_non_square_image_turns_pixels_not_percent(tmp_path: Path) -> None:
    image(tmp_path / "w.png", 200, 100)
    # 20 x 10 px at (100, 50) is 10% x 10%; at 45 degrees the corners are (100, 50), (114.1, 64.1),
    # (107.1, 71.2), (92.9, 57.1).
    result = rectangle("pit", 50, 50, 10, 10, rotation=45, original_width=200, original_height=100)
    tasks = [{"id": 1, "data": {"image": "w.png"}, "annotations": [{"result": [result]}]}]
    ((_, *corners),) = by_name(read_labelstudio(export_of(tmp_path / "e.json", tasks), names=CLASSES))["w.png"]
    assert np.allclose(corners, (100 - 10 * 0.7071, 50, 100 + 20 * 0.7071, 50 + 30 * 0.7071), atol=1e-3)


def test_boxes_are_clipped_to_the_image_and_one_outside_is_dropped(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 100, 100)
    results = [
        rectangle("pit", 90, 95, 20, 20, original_width=100, original_height=100),
        rectangle("patch", 120, 5, 5, 5),
    ]
    tasks = [{"id": 1, "data": {"image": "a.png"}, "annotations": [{"result": results}]}]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    assert by_name(collection) == {"a.png": [(1, 90, 95, 100, 100)]}
    assert "task 1 result rpit: box clipped to the 100x100 image" in problems(collection, NOTE)
    assert problems(collection, DROPPED_BOX) == ["task 1 result rpatch: box lies outside the 100x100 image"]


def test_the_file_size_wins_over_a_differing_original_size(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 50, 40)  # the export says 100 x 80: percent still means the same place
    result = rectangle("pit", 10, 10, 50, 50, original_width=100, original_height=80)
    tasks = [{"id": 1, "data": {"image": "a.png"}, "annotations": [{"result": [result]}]}]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    assert by_name(collection) == {"a.png": [(1, 5, 4, 30, 24)]}
    (note,) = problems(collection, NOTE)
    assert (
        note
        == "task 1: original size 100x80 in the export differs from the file's 50x40; the percent coordinates are applied to the file's size"
    )


def test_other_result_types_are_named(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 100, 100)
    results = [
        {"id": "p1", "type": "polygonlabels", "value": {"points": [[1, 1], [5, 5], [1, 5]], "polygonlabels": ["pit"]}},
        {"id": "c1", "type": "choices", "value": {"choices": ["ok"]}},
        {
            "id": "m1",
            "type": "rectanglelabels",
            "value": {"x": "1", "y": 1, "width": 2, "height": 2, "rectanglelabels": ["pit"]},
        },
        rectangle("pit", 10, 10, 10, 10),
    ]
    tasks = [{"id": 1, "data": {"image": "a.png"}, "annotations": [{"result": results}]}]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    assert by_name(collection) == {"a.png": [(1, 10, 10, 20, 20)]}
    assert problems(collection, DROPPED_BOX) == [
        "task 1 result p1: a polygonlabels region is not a rectangle",
        'task 1 result m1: x, y, width and height must be finite numbers, got ["1", 1, 2, 2]',
    ]
    assert "task 1: results ignored (not regions): 1 choices" in problems(collection, NOTE)


def test_a_problem_prints_as_one_line(tmp_path: Path) -> None:
    tasks = [{"id": 5, "data": {"image": "gone.png"}, "annotations": [{"result": []}]}]
    (problem,) = read_labelstudio(export_of(tmp_path / "export.json", tasks)).problems
    assert isinstance(problem, Problem)
    assert (
        str(problem)
        == f"{tmp_path / 'export.json'}: task 5: image gone.png: not found (looked under {tmp_path}) (skipped image)"
    )


def test_a_local_file_written_without_percent_encoding_is_found(tmp_path: Path) -> None:
    image(tmp_path / "images" / "a+b&c.png", 100, 100)  # parse_qs would read + as a space and & as a new field
    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=images/a+b&c.png"}, "annotations": [{"result": []}]}]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks))
    assert [s.image for s in collection.samples] == [tmp_path / "images" / "a+b&c.png"]
    assert not collection.problems


def test_tasks_naming_the_same_image_become_one_sample(tmp_path: Path) -> None:
    image(tmp_path / "a.png", 100, 100)
    tasks = [
        {"id": 1, "data": {"image": "a.png"}, "annotations": [{"result": [rectangle("pit", 1, 1, 5, 5)]}]},
        {"id": 2, "data": {"image": "./a.png"}, "annotations": [{"result": [rectangle("patch", 50, 50, 9, 9)]}]},
    ]
    collection = read_labelstudio(export_of(tmp_path / "export.json", tasks), names=CLASSES)
    assert by_name(collection) == {"a.png": [(1, 1, 1, 6, 6), (2, 50, 50, 59, 59)]}
    assert problems(collection, NOTE) == [
        "task 2 names the same image a.png as task 1: one image with the boxes of both"
    ]
