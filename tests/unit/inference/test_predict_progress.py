"""The total `predict`'s progress bar is given: a folder and a list file are counted ahead, a glob is not, and a
resumed run's bar covers the whole source and starts at the images done before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from tqdm import tqdm

from pipeline.inference import predict
from pipeline.inference.discover import Count, count_images, iter_images
from pipeline.inference.engine import _NoBar, _progress
from pipeline.inference.results import ERRORS, PREDICTIONS, DoneSet


def _image(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size, 3), 100, np.uint8))
    return path


def _tree(root: Path) -> None:
    for name in ["b.png", "a/z.jpg", "a/deep/x.bmp", "c.TIF", "out/annotated.jpg"]:
        _image(root / name)
    (root / "notes.txt").write_text("not an image")
    os.symlink("..", root / "a" / "loop")  # walked once, as the prediction walks it
    os.symlink(root / "a", root / "also-a")


def test_a_folder_is_counted_by_the_walks_own_rules(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    out = tmp_path / "src" / "out"
    walked = list(iter_images(tmp_path / "src", exclude=out))
    assert len(walked) == 4  # the loop, the second link to a/ and the output folder add nothing
    assert count_images(tmp_path / "src", out) == Count(images=4, done=0)
    assert count_images(tmp_path / "src" / "b.png") == Count(1, 0)


def test_a_list_file_is_counted_by_its_entries_and_a_glob_not_at_all(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    listing = tmp_path / "todo.txt"
    listing.write_text("# today\nsrc/b.png\nsrc/a/z.jpg\n\nsrc/./b.png\nsrc/missing.png\n")
    assert count_images(listing) == Count(3, 0)  # b.png once (named twice); a missing file is an error line to write
    assert count_images(str(tmp_path / "src" / "**" / "*.png")) is None


def test_a_resumed_run_counts_the_images_done_before(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    out = tmp_path / "results"
    out.mkdir()
    walked = [str(p) for p in iter_images(tmp_path / "src")]
    (out / PREDICTIONS).write_text(json.dumps({"path": walked[0], "detections": []}) + "\n")
    gone = str(tmp_path / "elsewhere.png")  # done before, but not in the source now
    errors = [{"path": walked[2], "reason": "empty file"}, {"path": gone, "reason": "no such file"}]
    (out / ERRORS).write_text("".join(json.dumps(record) + "\n" for record in errors))
    assert count_images(tmp_path / "src", done=DoneSet.of(out)) == Count(images=5, done=2)


def test_the_bar_shows_the_count_or_counts_up() -> None:
    counted, streamed = _progress(True, Count(5, 2)), _progress(True, None)
    assert (counted.total, counted.n) == (5, 2)
    assert (streamed.total, streamed.n) == (None, 0)
    counted.close()
    streamed.close()
    assert isinstance(_progress(False, Count(5, 2)), _NoBar)


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[tqdm]:
    """Every progress bar `predict` makes, kept after it closes."""
    made: list[tqdm] = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("tqdm.tqdm", Recording)
    return made


def _predict(source: Path, model: Path, out: Path) -> None:
    predict(source, str(model), out, imgsz=32, runtime="torch", device="cpu", workers=1, batch=2)


def test_predict_gives_its_bar_the_count_and_a_resumed_run_starts_at_the_done(
    tiny_model: Path, bars: list[tqdm], tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        _image(frames / f"{i}.png", 32)
    _predict(frames, tiny_model, tmp_path / "out")
    assert [(bar.total, bar.initial, bar.n) for bar in bars] == [(3, 0, 3)]

    for i in range(3, 5):  # two more frames arrive; the same command again predicts only those
        _image(frames / f"{i}.png", 32)
    _predict(frames, tiny_model, tmp_path / "out")
    assert [(bar.total, bar.initial, bar.n) for bar in bars[1:]] == [(5, 3, 5)]
    lines = (tmp_path / "out" / PREDICTIONS).read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [str(frames / f"{i}.png") for i in range(5)]

    listing = tmp_path / "todo.txt"
    listing.write_text("frames/1.png\nframes/4.png\nframes/gone.png\n")
    _predict(listing, tiny_model, tmp_path / "listed")
    assert [(bar.total, bar.initial, bar.n) for bar in bars[2:]] == [(3, 0, 3)]  # the missing file is done too
