"""pipeline/data/synth.py: reproducible images, YOLO layout on disk, tight and valid boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import pipeline.data.synth as synth
from pipeline.data.synth import CLASS_NAMES, Box, render, synthesize


def yolo_to_pixels(line: str, width: int, height: int) -> tuple[int, float, float, float, float]:
    """A YOLO label line back to (class, x0, y0, x1, y1) with inclusive pixel corners."""
    cls, cx, cy, w, h = line.split()
    cx_px, cy_px, w_px, h_px = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
    return int(cls), cx_px - w_px / 2, cy_px - h_px / 2, cx_px + w_px / 2 - 1, cy_px + h_px / 2 - 1


def changed_extents(monkeypatch: pytest.MonkeyPatch, seed: int, index: int, size: int) -> list[tuple[int, tuple]]:
    """Render one image, recording for each defect the extent of the pixels its painting changed."""
    original = synth._apply
    extents: list[tuple[int, tuple]] = []

    def recording_apply(surface: np.ndarray, mask: np.ndarray, cls: int, rng: np.random.Generator) -> np.ndarray:
        before = surface.copy()
        changed = original(surface, mask, cls, rng)
        ys, xs = np.nonzero(surface != before)
        extents.append((cls, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))))
        return changed

    monkeypatch.setattr(synth, "_apply", recording_apply)
    _, boxes = render(seed, index, size)
    monkeypatch.undo()
    assert [cls for cls, _ in extents] == [box.cls for box in boxes]
    return [(box.cls, (box.x0, box.y0, box.x1, box.y1), extent) for box, (_, extent) in zip(boxes, extents)]


# ---- render -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 7])
def test_same_seed_same_image_and_boxes(index: int) -> None:
    image_a, boxes_a = render(3, index, 64)
    image_b, boxes_b = render(3, index, 64)
    assert image_a.tobytes() == image_b.tobytes()
    assert boxes_a == boxes_b


def test_different_seed_differs() -> None:
    image_a, _ = render(0, 0, 64)
    image_b, _ = render(1, 0, 64)
    assert not np.array_equal(image_a, image_b)


def test_different_index_differs() -> None:
    assert not np.array_equal(render(0, 0, 64)[0], render(0, 1, 64)[0])


def test_render_shape_and_dtype() -> None:
    image, boxes = render(0, 0, 96)
    assert image.shape == (96, 96, 3)
    assert image.dtype == np.uint8
    # grey surface written as BGR: the three channels are equal
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert all(isinstance(box, Box) for box in boxes)


def test_boxes_inside_the_image_and_ordered() -> None:
    size = 64
    seen_classes = set()
    for index in range(60):
        for box in render(5, index, size)[1]:
            assert 0 <= box.cls < len(CLASS_NAMES)
            assert 0 <= box.x0 <= box.x1 < size
            assert 0 <= box.y0 <= box.y1 < size
            seen_classes.add(box.cls)
    assert seen_classes == {0, 1, 2}


def test_defects_change_the_pixels_inside_their_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every defect changed something, and everything it changed touches its box."""
    for index in range(30):
        for _, box, extent in changed_extents(monkeypatch, 0, index, 64):
            x0, y0, x1, y1 = extent
            # the changed area overlaps the box (it is not painted somewhere else)
            assert x0 <= box[2] and box[0] <= x1 and y0 <= box[3] and box[1] <= y1


@pytest.mark.parametrize("cls", [0, 2])
def test_scratch_and_patch_boxes_are_tight(monkeypatch: pytest.MonkeyPatch, cls: int) -> None:
    checked = 0
    for index in range(40):
        for box_cls, box, extent in changed_extents(monkeypatch, 0, index, 64):
            if box_cls == cls:
                assert box == extent, f"image {index}: box {box} but pixels changed over {extent}"
                checked += 1
    assert checked > 3


def test_pit_boxes_are_tight(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for index in range(40):
        for box_cls, box, extent in changed_extents(monkeypatch, 0, index, 64):
            if box_cls == 1:
                assert box == extent, f"image {index}: box {box} but pixels changed over {extent}"
                checked += 1
    assert checked > 3


# ---- Box.to_yolo --------------------------------------------------------------------------------


def test_to_yolo_exact_values() -> None:
    assert Box(1, 0, 0, 63, 63).to_yolo(64, 64) == "1 0.500000 0.500000 1.000000 1.000000"
    assert Box(2, 0, 0, 0, 0).to_yolo(100, 50) == "2 0.005000 0.010000 0.010000 0.020000"


def test_to_yolo_round_trips_the_pixel_box() -> None:
    size = 128
    for index in range(30):
        for box in render(2, index, size)[1]:
            cls, x0, y0, x1, y1 = yolo_to_pixels(box.to_yolo(size, size), size, size)
            assert cls == box.cls
            assert abs(x0 - box.x0) <= 0.5 and abs(y0 - box.y0) <= 0.5
            assert abs(x1 - box.x1) <= 0.5 and abs(y1 - box.y1) <= 0.5


def test_to_yolo_non_square() -> None:
    box = Box(0, 10, 5, 29, 14)
    cls, x0, y0, x1, y1 = yolo_to_pixels(box.to_yolo(200, 100), 200, 100)
    assert (cls, round(x0), round(y0), round(x1), round(y1)) == (0, 10, 5, 29, 14)


# ---- synthesize ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory):
    return synthesize(tmp_path_factory.mktemp("synth") / "set", images=50, seed=4, size=64, val_fraction=0.2)


def test_layout_and_counts(small_set) -> None:
    out = small_set.out
    assert small_set.images == {"train": 40, "val": 10}
    for split, count in small_set.images.items():
        images = sorted((out / "images" / split).glob("*.png"))
        labels = sorted((out / "labels" / split).glob("*.txt"))
        assert len(images) == count
        assert [p.stem for p in images] == [p.stem for p in labels]


def test_data_yaml(small_set) -> None:
    assert small_set.data_yaml == small_set.out / "data.yaml"
    spec = yaml.safe_load(small_set.data_yaml.read_text())
    assert "path" not in spec
    assert spec["train"] == "images/train"
    assert spec["val"] == "images/val"
    assert spec["names"] == {0: "scratch", 1: "pit", 2: "patch"}


def test_val_is_the_last_images(small_set) -> None:
    val = sorted(p.name for p in (small_set.out / "images" / "val").glob("*.png"))
    assert val == [f"synth_4_{i:06d}.png" for i in range(40, 50)]


def test_label_lines_are_valid(small_set) -> None:
    lines = [line for label in (small_set.out / "labels").rglob("*.txt") for line in label.read_text().splitlines()]
    assert lines
    for line in lines:
        fields = line.split()
        assert len(fields) == 5, line
        assert fields[0] in {"0", "1", "2"}
        cx, cy, w, h = map(float, fields[1:])
        assert 0 <= cx <= 1 and 0 <= cy <= 1
        assert 0 < w <= 1 and 0 < h <= 1
        assert 0 <= cx - w / 2 + 1e-6 and cx + w / 2 - 1e-6 <= 1
        assert 0 <= cy - h / 2 + 1e-6 and cy + h / 2 - 1e-6 <= 1


def test_box_counts_match_labels(small_set) -> None:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for label in (small_set.out / "labels").rglob("*.txt"):
        for line in label.read_text().splitlines():
            counts[CLASS_NAMES[int(line.split()[0])]] += 1
    assert counts == small_set.boxes


def test_files_match_render(small_set) -> None:
    stem = "synth_4_000003"
    image, boxes = render(4, 3, 64)
    on_disk = cv2.imread(str(small_set.out / "images" / "train" / f"{stem}.png"))
    assert np.array_equal(on_disk, image)
    label = (small_set.out / "labels" / "train" / f"{stem}.txt").read_text().splitlines()
    assert label == [box.to_yolo(64, 64) for box in boxes]


def test_same_seed_byte_identical_sets(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", images=6, seed=9, size=32)
    b = synthesize(tmp_path / "b", images=6, seed=9, size=32)
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == ".yolo-pipeline.json":  # the folder's marker says when it was made: all but that, equal
            marks = [{k: v for k, v in json.loads((x.out / rel).read_text()).items() if k != "created"} for x in (a, b)]
            assert marks[0] == marks[1]
            continue
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes(), rel
    assert a.images == b.images and a.boxes == b.boxes


def test_growing_a_set_keeps_existing_images(tmp_path: Path) -> None:
    synthesize(tmp_path / "small", images=4, seed=1, size=32, val_fraction=0.25)
    synthesize(tmp_path / "big", images=8, seed=1, size=32, val_fraction=0.25)
    first = (tmp_path / "small" / "images" / "train" / "synth_1_000000.png").read_bytes()
    assert (tmp_path / "big" / "images" / "train" / "synth_1_000000.png").read_bytes() == first


@pytest.mark.parametrize(("images", "fraction", "expected"), [(2, 0.2, (1, 1)), (10, 0.01, (9, 1)), (10, 0.5, (5, 5))])
def test_split_sizes(tmp_path: Path, images: int, fraction: float, expected: tuple[int, int]) -> None:
    summary = synthesize(tmp_path / "s", images=images, seed=0, size=32, val_fraction=fraction)
    assert (summary.images["train"], summary.images["val"]) == expected


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"images": 1}, "images"),
        ({"images": 0}, "images"),
        ({"size": 16}, "size"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        synthesize(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


# ---- backgrounds: defect-free images ------------------------------------------------------------


def empty_labels(out: Path) -> dict[str, set[str]]:
    """The stems with an empty label file, per split."""
    return {
        split: {p.stem for p in (out / "labels" / split).glob("*.txt") if not p.read_text().strip()}
        for split in ("train", "val")
    }


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_backgrounds_are_surface_only_images_with_empty_labels(tmp_path: Path, fraction: float) -> None:
    from pipeline.data.card import build_card
    from pipeline.data.validate import validate
    from pipeline.data.yolo import read_yolo

    summary = synthesize(tmp_path / "s", images=40, seed=3, size=32, backgrounds=fraction)
    stem = "synth_3_{:06d}".format
    by_chance = {i for i in range(40) if not render(3, i, 32)[1]}  # what a set without backgrounds leaves empty
    drawn = synth._surface_only(40, 3, 8, fraction)
    assert len(drawn) == summary.surface_only == (10 if fraction else 0)  # 8 of 32 train, 2 of 8 val
    assert sum(i >= 32 for i in drawn) == (2 if fraction else 0)
    empty = empty_labels(summary.out)
    assert empty["train"] | empty["val"] == {stem(i) for i in drawn | by_chance}
    assert summary.backgrounds == {split: len(stems) for split, stems in empty.items()}
    for index in drawn:  # the surface image ``index`` would have had, without its defects
        split = "val" if index >= 32 else "train"
        on_disk = cv2.imread(str(summary.out / "images" / split / f"{stem(index)}.png"))
        assert np.array_equal(on_disk, render(3, index, 32, defects=False)[0])
    report = validate(read_yolo(summary.data_yaml), "fail")  # raises on any problem
    assert report.counts()["images"] == 40 and not report.errors
    card = build_card(report.collection, "s", "")
    assert {split: card["splits"][split]["backgrounds"] for split in ("train", "val")} == summary.backgrounds


def test_backgrounds_leave_the_other_images_as_they_were(tmp_path: Path) -> None:
    plain = synthesize(tmp_path / "plain", images=12, seed=5, size=32)
    mixed = synthesize(tmp_path / "mixed", images=12, seed=5, size=32, backgrounds=0.5)
    drawn = {f"synth_5_{i:06d}" for i in synth._surface_only(12, 5, 2, 0.5)}
    for image in (plain.out / "images").rglob("*.png"):
        same = (mixed.out / image.relative_to(plain.out)).read_bytes() == image.read_bytes()
        assert same != (image.stem in drawn), image.name


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_backgrounds(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match=r"^backgrounds: must be a fraction, 0 <= F < 1"):
        synthesize(tmp_path / "bad", images=4, backgrounds=fraction)
    assert not (tmp_path / "bad").exists()


# ---- large boards: defects at absolute sizes (defect_px) ---------------------------------------------------------

BOARD, SIZES = 256, (8, 40)


def test_board_same_seed_same_image_and_boxes() -> None:
    image_a, boxes_a = render(2, 5, BOARD, defect_px=SIZES)
    image_b, boxes_b = render(2, 5, BOARD, defect_px=SIZES)
    assert image_a.shape == (BOARD, BOARD, 3) and image_a.dtype == np.uint8
    assert image_a.tobytes() == image_b.tobytes() and boxes_a == boxes_b
    assert not np.array_equal(image_a, render(2, 6, BOARD, defect_px=SIZES)[0])


def test_without_defect_px_the_images_are_as_before() -> None:
    image, boxes = render(3, 4, 64)
    again, boxes_again = render(3, 4, 64, defect_px=None)
    assert image.tobytes() == again.tobytes() and boxes == boxes_again


def board_boxes(size: int, images: int, sizes: tuple[int, int] = SIZES) -> list[list[Box]]:
    return [render(0, index, size, defect_px=sizes)[1] for index in range(images)]


def test_board_defects_have_the_asked_sizes_log_uniformly() -> None:
    sides = np.array([max(b.x1 - b.x0, b.y1 - b.y0) + 1 for boxes in board_boxes(512, 40) for b in boxes])
    assert len(sides) > 120
    assert sides.min() >= SIZES[0] - 1 and sides.max() <= SIZES[1] + 1  # the box's long side, within a pixel
    below = float(np.mean(sides < np.sqrt(SIZES[0] * SIZES[1])))  # log-uniform: half below the geometric mean
    assert 0.35 < below < 0.65, below
    assert {b.cls for boxes in board_boxes(512, 10) for b in boxes} == {0, 1, 2}


def test_more_defects_on_a_larger_board() -> None:
    """On average one defect per 256 x 256 px: 1 on a 256-px board, 4 on a 512-px one."""
    small = np.mean([len(b) for b in board_boxes(256, 60)])
    large = np.mean([len(b) for b in board_boxes(512, 30)])
    assert 0.6 < small < 1.5 and 3.0 < large < 5.2, (small, large)


def test_board_boxes_inside_and_apart() -> None:
    for boxes in board_boxes(BOARD, 40):
        for i, a in enumerate(boxes):
            assert 0 <= a.x0 <= a.x1 < BOARD and 0 <= a.y0 <= a.y1 < BOARD
            for b in boxes[i + 1 :]:
                assert a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0, (a, b)


def test_board_boxes_are_tight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each box is the extent of the pixels its defect changed on the board."""
    original = synth._apply
    extents: list[tuple[int, int, int, int]] = []

    def recording_apply(window: np.ndarray, mask: np.ndarray, cls: int, rng: np.random.Generator) -> np.ndarray:
        before = window.copy()
        changed = original(window, mask, cls, rng)
        ys, xs = np.nonzero(window != before)
        extents.append((int(xs.max() - xs.min()), int(ys.max() - ys.min())))  # the window's own coordinates
        return changed

    monkeypatch.setattr(synth, "_apply", recording_apply)
    boxes = [b for index in range(10) for b in render(1, index, BOARD, defect_px=SIZES)[1]]
    assert len(boxes) == len(extents) > 5
    assert [(b.x1 - b.x0, b.y1 - b.y0) for b in boxes] == extents


def test_board_set_on_disk(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "boards", images=6, seed=2, size=BOARD, defect_px=SIZES, backgrounds=0.4)
    image, boxes = render(2, 1, BOARD, defect_px=SIZES, defects=1 not in synth._surface_only(6, 2, 1, 0.4))
    on_disk = cv2.imread(str(summary.out / "images" / "train" / "synth_2_000001.png"))
    assert np.array_equal(on_disk, image)
    label = (summary.out / "labels" / "train" / "synth_2_000001.txt").read_text().splitlines()
    assert label == [box.to_yolo(BOARD, BOARD) for box in boxes]
    assert summary.surface_only == 2
    from pipeline.destinations import MARKER

    assert json.loads((summary.out / MARKER).read_text())["defect_px"] == [8, 40]


@pytest.mark.parametrize(
    ("defect_px", "message"),
    [
        ((1, 10), "need 2 <= min <= max"),
        ((20, 10), "need 2 <= min <= max"),
        ((8, 80), "at most a quarter of the size"),
        (("a", "b"), "expected \\(min, max\\)"),
        ((8,), "expected \\(min, max\\)"),
    ],
)
def test_bad_defect_px(tmp_path: Path, defect_px: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^defect_px: .*{message}"):
        synthesize(tmp_path / "bad", images=4, size=BOARD, defect_px=defect_px)
    assert not (tmp_path / "bad").exists()


def test_cli_defect_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import cli

    out = tmp_path / "boards"
    assert (
        cli.main(["data", "synth", "--out", str(out), "--images", "4", "--size", "256", "--defect-size", "8-40"]) == 0
    )
    image = cv2.imread(str(out / "images" / "train" / "synth_0_000000.png"))
    assert np.array_equal(image, render(0, 0, 256, defect_px=(8, 40))[0])
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "256", "--defect-size", "8-80"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --defect-size: the largest defect (80 px)")
    with pytest.raises(SystemExit):
        cli.main(["data", "synth", "--out", str(tmp_path / "y"), "--defect-size", "big"])
    assert "--defect-size: expected MIN-MAX pixels" in capsys.readouterr().err
