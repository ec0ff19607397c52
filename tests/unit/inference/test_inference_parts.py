"""The parts of `predict` that need no model: discovery, decoding, the results folder, batching."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.inference.batching import Prepared, run_batches
from pipeline.inference.decode import ImageError, read_image
from pipeline.inference.discover import iter_images
from pipeline.inference.engine import _verdict
from pipeline.inference.errors import ResultsError, SourceError
from pipeline.inference.results import AppendLog, DoneSet, Verdict, check_settings, read_log, write_summary


def _image(path: Path, value: int = 100, shape: tuple[int, ...] = (8, 8, 3), dtype: type = np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, dtype))
    return path


def test_folders_are_walked_in_name_order_with_every_image_format_and_nothing_else(tmp_path: Path) -> None:
    for name in ["b.png", "a/z.jpg", "a/y.JPEG", "a/deep/x.bmp", "c.tif", "c2.tiff", "d.webp"]:
        _image(tmp_path / "src" / name)
    (tmp_path / "src" / "notes.txt").write_text("not an image")
    _image(tmp_path / "src" / "out" / "annotated.jpg")  # the output folder inside the source is skipped
    found = [
        p.relative_to(tmp_path / "src").as_posix() for p in iter_images(tmp_path / "src", tmp_path / "src" / "out")
    ]
    assert found == ["a/deep/x.bmp", "a/y.JPEG", "a/z.jpg", "b.png", "c.tif", "c2.tiff", "d.webp"]


def test_globs_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["p/1.png", "p/q/2.png", "p/q/3.jpg", "p/4.jpg"]:
        _image(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert [p.as_posix() for p in iter_images("p/**/*.png")] == ["p/1.png", "p/q/2.png"]
    assert [p.as_posix() for p in iter_images("p/*.jpg")] == ["p/4.jpg"]
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text(f"# today\n../p/q/3.jpg\n\n{tmp_path / 'p/1.png'}\n../missing.png\n")
    assert list(iter_images(listing)) == [
        listing.parent / "../p/q/3.jpg",
        tmp_path / "p/1.png",
        listing.parent / "../missing.png",
    ]
    with pytest.raises(SourceError, match="nowhere: no such file or folder"):
        list(iter_images("nowhere"))


def test_images_of_every_kind_come_out_as_8bit_bgr(tmp_path: Path) -> None:
    grey16 = _image(tmp_path / "g16.png", 4095, (6, 5), np.uint16)  # 12-bit data in 16 bits: scaled by 4095
    out = read_image(grey16)
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8 and int(out.max()) == 255
    assert read_image(_image(tmp_path / "g.png", 7, (6, 5))).shape == (6, 5, 3)
    bgra = read_image(_image(tmp_path / "a.png", 9, (4, 4, 4)))
    assert bgra.shape == (4, 4, 3) and int(bgra.max()) == 9
    png_named_jpg = tmp_path / "really_png.jpg"  # decoded by content
    png_named_jpg.write_bytes(_image(tmp_path / "x.png").read_bytes())
    assert read_image(png_named_jpg).shape == (8, 8, 3)


def test_bad_images_say_why(tmp_path: Path) -> None:
    good_jpg = _image(tmp_path / "ok.jpg", shape=(32, 32, 3)).read_bytes()
    good_png = _image(tmp_path / "ok.png", shape=(32, 32, 3)).read_bytes()
    cases = {
        "empty.jpg": (b"", "empty file (0 bytes)"),
        "cut.jpg": (good_jpg[: len(good_jpg) // 2], "truncated JPEG"),
        "cut.png": (good_png[:-20], "truncated PNG"),
        "text.png": (b"hello, not pixels", "not an image"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=re.escape(reason)):
            read_image(tmp_path / name)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "gone.png")


def test_logs_append_whole_lines_and_cut_an_unfinished_one(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"path": "a"}\n{"path": "b"}\n{"path": "c", "dete')  # killed mid-line
    log = AppendLog(path)
    assert log.lines == 2
    log.append({"path": "c", "detections": []})
    log.close()
    assert [r["path"] for r in read_log(path)] == ["a", "b", "c"]
    done = DoneSet.of(tmp_path)
    assert len(done) == 3 and "b" in done and "d" not in done


def test_a_folder_refuses_results_made_with_other_settings(tmp_path: Path) -> None:
    check_settings(tmp_path, {"model": "a.pt", "conf": 0.25})
    check_settings(tmp_path, {"model": "a.pt", "conf": 0.25})  # the same: carries on
    with pytest.raises(ResultsError, match=r"holds results made with conf=0.25, not 0.5; use another --out"):
        check_settings(tmp_path, {"model": "a.pt", "conf": 0.5})


def test_verdicts_and_the_summary_table(tmp_path: Path) -> None:
    verdict = _verdict({"scratch": 0.6, "default": 0.3}, ["scratch", "pit"], conf=0.25)
    assert verdict == Verdict({"scratch": 0.6}, 0.3)
    with pytest.raises(ResultsError, match="threshold 'dent': the model has no such class"):
        _verdict({"dent": 0.5}, ["scratch", "pit"], 0.25)

    def det(cls_id: int, name: str, score: float) -> dict:
        return {"class_id": cls_id, "class": name, "score": score, "box": [1.0, 2.0, 5.0, 8.0]}

    log = AppendLog(tmp_path / "predictions.jsonl")
    log.append({"image_id": 1, "path": "a.png", "width": 10, "height": 9, "detections": [det(0, "scratch", 0.5)]})
    log.append({"image_id": 2, "path": "b.png", "width": 10, "height": 9, "detections": [det(1, "pit", 0.35)] * 2})
    log.append({"image_id": 3, "path": "c.png", "width": 10, "height": 9, "detections": []})
    log.close()
    totals = write_summary(tmp_path, ["scratch", "pit"], verdict)
    assert totals == {"images": 3, "detections": {"scratch": 1, "pit": 2}, "failed_verdicts": 1}
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows == [
        "path,width,height,detections,scratch,pit,max_score,verdict",
        "a.png,10,9,1,1,0,0.5,pass",  # 0.5 < the scratch threshold 0.6
        "b.png,10,9,2,0,2,0.35,fail",  # 0.35 >= the default 0.3
        "c.png,10,9,0,0,0,0.0,pass",
    ]
    coco = json.loads((tmp_path / "coco_results.json").read_text())
    assert coco[0] == {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 4.0, 6.0], "score": 0.5}
    assert [r["image_id"] for r in coco] == [1, 2, 2]


class _CountingDetector:
    """Stands in for the model: records each call's batch and finds one box per input at the input's corner."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, ...]]] = []

    def detect(self, inputs: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        self.calls.append([tuple(i.shape) for i in inputs])
        return [np.array([[0.0, 0.0, 4.0, 4.0, 0.9, 0.0]]) for _ in sizes]


def test_batches_hold_one_input_shape_tiles_included_and_images_come_back_in_order() -> None:
    def item(name: str, *shapes: tuple[int, ...], offsets: list | None = None) -> Prepared:
        if not shapes:
            return Prepared(name, error="bad")
        offsets = offsets or [(0, 0)] * len(shapes)
        return Prepared(name, (8, 8), None, [np.zeros(s) for s in shapes], offsets, [(8, 8)] * len(shapes))

    tiled = item("t", (3, 8, 8), (3, 8, 8), (3, 8, 8), offsets=[(0, 0), (100, 0), (0, 50)])
    items = [item("a", (3, 8, 8)), item("x"), tiled, item("b", (3, 4, 8)), item("c", (3, 4, 8))]
    detector = _CountingDetector()
    released = list(run_batches(iter(items), detector, size=2))
    assert [i.path for i in released] == ["a", "x", "t", "b", "c"]
    assert [len(call) for call in detector.calls] == [2, 2, 2]  # a+t0, t1+t2, then b+c (a new shape)
    assert released[1].error == "bad"
    # The tiles' boxes moved by their offsets; boxes from different tiles stay apart.
    assert sorted(map(tuple, released[2].merged(0.7, 300)[:, :2].tolist())) == [(0.0, 0.0), (0.0, 50.0), (100.0, 0.0)]
