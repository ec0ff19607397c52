"""pipeline/data/tiles.py: native-scale tiles for training, cut where predict cuts, cached per dataset and settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline import cli
from pipeline.config import DataConfig, TileConfig
from pipeline.data.annotations import Box
from pipeline.data.tiles import (
    boxes_in_tile,
    cached_tiles,
    ignore_file,
    pixels_of,
    tile_grid,
    tile_windows,
    write_tiles,
)
from pipeline.data.training_data import prepare_training_data
from pipeline.data.validate import validate
from pipeline.data.yolo import read_yolo
from pipeline.inference.batching import Tiling, prepare
from tests.helpers.processes import hold

Labels = list[tuple[int, float, float, float, float]]  # class, x1, y1, x2, y2 in pixels


def _dataset(root: Path, images: dict[str, tuple[np.ndarray, Labels]], val: dict | None = None) -> Path:
    """A YOLO dataset of these images (name -> (pixels, boxes)) in train, and ``val`` (default: one image of the
    first one's size and boxes)."""
    if val is None:
        pixels, boxes = next(iter(images.values()))
        val = {"v": (_noise(*pixels.shape[:2], seed=99), boxes)}
    for split, content in (("train", images), ("val", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, (pixels, boxes) in content.items():
            height, width = pixels.shape[:2]
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), pixels)
            lines = [
                f"{c} {(x1 + x2) / 2 / width} {(y1 + y2) / 2 / height} {(x2 - x1) / width} {(y2 - y1) / height}\n"
                for c, x1, y1, x2, y2 in boxes
            ]
            (root / "labels" / split / f"{name}.txt").write_text("".join(lines))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["scratch", "pit"]}))
    return data_yaml


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def _collection(data_yaml: Path):
    return validate(read_yolo(data_yaml), "skip").collection


# ---- where tiles lie ----------------------------------------------------------------------------------------


def test_training_tiles_lie_where_predict_cuts_its_tiles(tmp_path: Path) -> None:
    assert tile_windows(300, 200, 128, 0.25) == tile_grid(300, 200, 128, 0.25)
    assert tile_windows(128, 100, 128, 0.2) == [(0, 0, 128, 100)]  # not larger than the tile: whole
    assert tile_windows(300, 200, 0, 0.2) == [(0, 0, 300, 200)]  # no tiling

    class Identity:  # predict's detector, as far as preparing an image goes
        def prepare(self, image: np.ndarray) -> np.ndarray:
            return image

    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), _noise(200, 300))
    prepared = prepare(str(path), Identity(), False, Tiling(128, 0.25))
    windows = [(x, y, x + w, y + h) for (x, y), (h, w) in zip(prepared.offsets, prepared.sizes, strict=True)]
    assert windows == tile_windows(300, 200, 128, 0.25)


# ---- the geometry ---------------------------------------------------------------------------------------------


def test_a_box_is_kept_whole_clipped_or_masked_by_how_much_of_it_the_tile_holds() -> None:
    inside = Box(0, 10, 10, 30, 30)
    at_60 = Box(1, 88, 40, 108, 60)  # 12 of its 20 px wide inside the tile
    at_40 = Box(0, 92, 70, 112, 90.5)  # 8 of 20
    at_50 = Box(1, 40, 90, 50, 110)  # exactly half: kept
    outside = Box(0, 150, 150, 160, 160)
    seen = boxes_in_tile([inside, at_60, at_40, at_50, outside], (0, 0, 100, 100), 0.5)
    assert seen.kept == [Box(0, 10, 10, 30, 30), Box(1, 88, 40, 100, 60), Box(1, 40, 90, 50, 100)]
    assert seen.clipped == 2 and seen.sources == {0, 1, 3}
    assert seen.cut == [Box(0, 92, 70, 100, 90.5)]  # its visible part, clipped to the tile
    assert [pixels_of(box) for box in seen.cut] == [(92, 70, 100, 91)]  # every pixel it touches
    # The same boxes seen from the next tile, in its own pixels.
    right = boxes_in_tile([at_60, at_40], (100, 0, 200, 100), 0.5)
    assert right.kept == [Box(0, 0, 70, 12, 90.5)] and right.cut == [Box(1, 0, 40, 8, 60)]


def test_a_masked_part_is_filled_and_the_rest_of_the_tile_is_the_source(tmp_path: Path) -> None:
    pixels = _noise(100, 200)
    # The second box: 40% in the left tile (masked there), 60% in the right one (kept there, clipped).
    data_yaml = _dataset(tmp_path / "src", {"frame": (pixels, [(0, 20, 20, 40, 40), (1, 92, 40, 112, 60)])})
    tile = TileConfig(size=100, overlap=0, min_visible=0.5, backgrounds=0)
    tiled = write_tiles(_collection(data_yaml), tmp_path / "tiled", tile, splits=["train"])

    left = cv2.imread(str(tiled.folder / "images/train/frame_0_0.png"))
    right = cv2.imread(str(tiled.folder / "images/train/frame_100_0.png"))
    hole = (slice(40, 60), slice(92, 100))  # the 40% of the second box that lies in the left tile
    filled = left[hole].reshape(-1, 3)
    assert (filled == filled[0]).all() and (left[hole] != pixels[:100, :100][hole]).any()  # one flat colour
    rest = np.ones((100, 100), bool)
    rest[hole] = False
    assert np.array_equal(left[rest], pixels[:100, :100][rest])  # every other pixel as in the source
    assert np.array_equal(right, pixels[:, 100:])  # nothing masked there
    assert _labels(tiled.folder / "labels/train/frame_0_0.txt") == [[0, 0.3, 0.3, 0.2, 0.2]]
    assert _labels(tiled.folder / "labels/train/frame_100_0.txt") == [[1, 0.06, 0.5, 0.12, 0.2]]  # clipped

    counts = tiled.card["tiles"]["splits"]["train"]
    assert {k: counts[k] for k in ("images", "cut", "tiles", "boxes_kept", "clipped", "masked")} == {
        "images": 1,
        "cut": 1,
        "tiles": 2,
        "boxes_kept": 2,
        "clipped": 1,
        "masked": 1,
    }
    assert tiled.card["train_image_side"] == 100 and tiled.card["images"] == 2
    assert tiled.line() == (
        "2 tiles of 100 px from 1 images (overlap 0): 2 boxes kept (1 clipped), 1 masked, 0 background tiles"
    )
    card_md = (tiled.folder / "card.md").read_text()
    assert "## Tiles" in card_md and "| train | 1 | 0 | 2 | 2 | 1 | 1 | 0 | 0 |" in card_md
    assert not (tiled.folder / "ignore").exists()


def test_an_ignored_part_keeps_its_pixels_and_is_written_as_a_region_for_the_loss(tmp_path: Path) -> None:
    pixels = _noise(100, 200)
    data_yaml = _dataset(tmp_path / "src", {"frame": (pixels, [(0, 20, 20, 40, 40), (1, 92, 40, 112, 60)])})
    tile = TileConfig(size=100, overlap=0, min_visible=0.5, backgrounds=0, cut_boxes="ignore")
    tiled = write_tiles(_collection(data_yaml), tmp_path / "tiled", tile, splits=["train"])

    left = tiled.folder / "images/train/frame_0_0.png"
    assert np.array_equal(cv2.imread(str(left)), pixels[:, :100])  # nothing filled
    assert ignore_file(left) == tiled.folder / "ignore/train/frame_0_0.txt"
    assert _labels(ignore_file(left)) == [[1, 0.96, 0.5, 0.08, 0.2]]  # the 40% cut by the border, in YOLO lines
    assert _labels(tiled.folder / "labels/train/frame_0_0.txt") == [[0, 0.3, 0.3, 0.2, 0.2]]  # not a label
    assert not ignore_file(tiled.folder / "images/train/frame_100_0.png").exists()  # nothing cut there
    counts = tiled.card["tiles"]["splits"]["train"]
    assert (counts["masked"], counts["ignored"], counts["boxes_kept"]) == (0, 1, 2)
    assert tiled.line() == (
        "2 tiles of 100 px from 1 images (overlap 0): 2 boxes kept (1 clipped), 1 ignored in the loss, "
        "0 background tiles"
    )
    assert "| ignored in the loss |" in (tiled.folder / "card.md").read_text()


def test_a_kept_box_keeps_its_pixels_where_a_masked_one_overlaps_it(tmp_path: Path) -> None:
    pixels = _noise(100, 200, seed=3)
    # A box 40% in the left tile, overlapping a box wholly inside it.
    data_yaml = _dataset(tmp_path / "src", {"f": (pixels, [(1, 92, 40, 112, 60), (0, 80, 30, 95, 50)])})
    tile = TileConfig(size=100, overlap=0, min_visible=0.5, backgrounds=0)
    tiled = write_tiles(_collection(data_yaml), tmp_path / "tiled", tile, splits=["train"])
    left = cv2.imread(str(tiled.folder / "images/train/f_0_0.png"))
    assert np.array_equal(left[30:50, 80:95], pixels[30:50, 80:95])  # the kept box: untouched
    assert (left[50:60, 92:100] != pixels[50:60, 92:100]).any()  # the masked part outside it: filled
    assert np.array_equal(left[:, :80], pixels[:, :80])


# ---- backgrounds, whole images -------------------------------------------------------------------------------


def _corner_boxes(tmp_path: Path, images: int = 10) -> Path:
    """``images`` 96-px images, each one box in its top-left 32-px tile: cut at 32 px, 1 tile with a box, 8 without."""
    content = {f"img{i}": (_noise(96, 96, i), [(0, 4, 4, 20, 20)]) for i in range(images)}
    return _dataset(tmp_path / "corners", content)


def _backgrounds(tiled) -> set[str]:
    labels = sorted((tiled.folder / "labels" / "train").glob("*.txt"))
    return {p.stem for p in labels if not p.read_text().strip()}


def test_defect_free_tiles_are_kept_up_to_the_share_drawn_from_the_seed(tmp_path: Path) -> None:
    collection = _collection(_corner_boxes(tmp_path))

    def tiles(share: float, seed: int, name: str):
        tile = TileConfig(size=32, overlap=0, backgrounds=share)
        return write_tiles(collection, tmp_path / name, tile, seed=seed, splits=["train"])

    half = tiles(0.5, 0, "a")
    counts = half.card["tiles"]["splits"]["train"]
    assert (counts["tiles"], counts["background_tiles"], counts["backgrounds_left_out"]) == (20, 10, 70)
    assert len(_backgrounds(half)) == 10  # empty label files
    assert _backgrounds(tiles(0.5, 0, "b")) == _backgrounds(half)  # the same seed: the same tiles
    assert _backgrounds(tiles(0.5, 1, "c")) != _backgrounds(half)
    assert tiles(0.2, 0, "d").card["tiles"]["splits"]["train"]["background_tiles"] == 2  # 2 of 12 <= 0.2
    assert tiles(0, 0, "e").card["tiles"]["splits"]["train"]["background_tiles"] == 0
    assert tiles(1, 0, "f").card["tiles"]["splits"]["train"]["background_tiles"] == 80


def test_images_not_larger_than_the_tile_are_linked_whole(tmp_path: Path) -> None:
    data_yaml = _dataset(tmp_path / "src", {"small": (_noise(48, 64), [(0, 5, 5, 15, 15)])})
    source = tmp_path / "src/images/train/small.png"
    before = source.read_bytes()
    tiled = write_tiles(_collection(data_yaml), tmp_path / "tiled", TileConfig(size=64), splits=["train"])
    used = tiled.folder / "images/train/small.png"
    assert used.read_bytes() == before == source.read_bytes()
    assert os.stat(used).st_ino == os.stat(source).st_ino  # a hard link on the same file system
    assert _labels(tiled.folder / "labels/train/small.txt") == [[0, 0.15625, 0.208333, 0.15625, 0.208333]]
    counts = tiled.card["tiles"]["splits"]["train"]
    assert (counts["whole"], counts["cut"], counts["tiles"], counts["boxes_kept"]) == (1, 0, 0, 1)


# ---- the cache and the training's data -----------------------------------------------------------------------


def test_tiles_are_made_once_per_dataset_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_PIPELINE_CACHE", str(tmp_path / "cache"))
    collection = _collection(_corner_boxes(tmp_path, images=3))
    tile = TileConfig(size=32, overlap=0)
    first = cached_tiles(collection, "a" * 64, tile)
    assert first.made and first.folder.parent == tmp_path / "cache" / "tiles"
    files = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")}
    again = cached_tiles(collection, "a" * 64, tile)
    assert not again.made and again.folder == first.folder and again.card == first.card
    assert {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")} == files  # nothing written
    other = cached_tiles(collection, "a" * 64, TileConfig(size=32, overlap=0.25))
    changed_data = cached_tiles(collection, "b" * 64, tile)
    assert other.made and changed_data.made
    assert len({first.folder, other.folder, changed_data.folder}) == 3
    assert sorted(p.name for p in (tmp_path / "cache" / "tiles").iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (first.folder, other.folder, changed_data.folder)
    )


def test_a_tiled_training_trains_on_the_cached_tiles_and_validates_on_whole_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_PIPELINE_CACHE", str(tmp_path / "cache"))
    data_yaml = _corner_boxes(tmp_path, images=4)
    config = DataConfig(path=str(data_yaml), tile={"size": 32, "overlap": 0, "backgrounds": 0.5})
    data = prepare_training_data(config, tmp_path / "run")
    spec = yaml.safe_load(data.dataset.data_yaml.read_text())
    tiles = next((tmp_path / "cache" / "tiles").glob("[!.]*"))
    assert spec["train"] == str(tiles / "images" / "train") and spec["val"] == str(data_yaml.parent / "images/val")
    assert data.dataset.images == {"train": 8, "val": 1}  # 4 tiles with a box, 4 without
    assert data.card["train_image_side"] == 32  # the side the checkpoint records
    card = json.loads((tmp_path / "run" / "data" / "card.json").read_text())
    assert card["tiles"]["splits"]["train"]["tiles"] == 8 and card["tiles"]["folder"] == str(tiles)
    assert card["image_sizes"] == {"96x96": 5}  # the card still describes the data itself
    line = next(note for note in data.notes if note.startswith("data.tile:"))
    assert line == (
        "data.tile: 8 tiles of 32 px from 4 images (overlap 0): 4 boxes kept (0 clipped), 0 masked, 4 background "
        f"tiles; made in {tiles}"
    )
    again = prepare_training_data(config, tmp_path / "run2")
    assert again.notes[-1].endswith(f"; reused in {tiles}")


# ---- the command ---------------------------------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str], list[str]]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_the_command_writes_a_tiled_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _corner_boxes(tmp_path, images=2).parent
    code, out, err = _run(["data", "tile", str(src), "--size", "32", "--overlap", "0", "--out", "tiled"], capsys)
    assert code == 0, err
    tiled = tmp_path / "tiled"
    assert out == [
        f"wrote 3 tiles to {tiled}",
        "train: 2 tiles of 32 px from 2 images (overlap 0): 2 boxes kept (0 clipped), 0 masked, 0 background tiles",
        "val: 1 tiles of 32 px from 1 images (overlap 0): 1 boxes kept (0 clipped), 0 masked, 0 background tiles",
        f"card: {tiled / 'card.md'}",
        f"data.path for a config: {tiled / 'data.yaml'}",
    ]
    assert yaml.safe_load((tiled / "data.yaml").read_text()) == {
        "train": "images/train",
        "val": "images/val",
        "names": {0: "scratch", 1: "pit"},
    }
    assert len(list((tiled / "images" / "train").iterdir())) == 2
    # Again into its own folder: replaced (the marker says it made it).
    again = ["data", "tile", str(src), "--size", "32", "--overlap", "0", "--backgrounds", "1", "--out", "tiled"]
    assert _run(again, capsys)[0] == 0
    assert len(list((tiled / "images" / "train").iterdir())) == 18  # every defect-free tile too
    ignored = ["data", "tile", str(src), "--size", "32", "--overlap", "0", "--cut-boxes", "ignore", "--out", "tiled"]
    code, out, _ = _run(ignored, capsys)
    assert code == 0 and out[1].endswith("2 boxes kept (0 clipped), 0 ignored in the loss, 0 background tiles")
    assert (tiled / "ignore" / "train").is_dir()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["MISSING", "--size", "64"], "error: MISSING: no such file or folder"),
        (["SRC", "--size", "16"], "error: --size: must be >= 32, got 16"),
        (["SRC", "--size", "64", "--overlap", "1"], "error: --overlap: must be < 1, got 1.0"),
        (["SRC", "--size", "64", "--min-visible", "0"], "error: --min-visible: must be > 0, got 0.0"),
        (["SRC", "--size", "64", "--backgrounds", "1.5"], "error: --backgrounds: must be <= 1, got 1.5"),
        (
            ["SRC", "--size", "64", "--cut-boxes", "blur"],
            "error: --cut-boxes: must be one of 'mask' or 'ignore', got 'blur'",
        ),
        (["SRC/images", "--size", "64"], "error: {src}/images: folder has no data.yaml (class names are needed)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    src = _corner_boxes(tmp_path, images=1).parent
    argv = ["data", "tile", *(o.replace("SRC", str(src)) for o in options), "--out", "tiled"]
    code, out, err = _run(argv, capsys)
    assert (code, out, err) == (2, [], [message.format(src=src)])
    assert not (tmp_path / "tiled").exists()


def test_the_command_refuses_a_folder_it_did_not_make_or_another_process_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = str(_corner_boxes(tmp_path, images=1).parent)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = _run(["data", "tile", src, "--size", "32", "--out", "mine"], capsys)
    assert code == 2 and err == [
        "error: --out mine: exists and was not made by yolo-pipeline; choose another --out or remove it yourself"
    ]
    with hold(tmp_path / "busy", "data tile"):
        code, _, err = _run(["data", "tile", src, "--size", "32", "--out", "busy"], capsys)
    assert code == 2 and len(err) == 1 and "busy is being written by data tile (pid " in err[0]
    assert err[0].endswith("; wait or choose another --out")
