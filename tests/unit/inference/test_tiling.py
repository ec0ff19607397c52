"""Tiles cover an image with the asked overlap; an object cut by tile borders comes back once, whole."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.tiles import tile_grid, tile_starts
from pipeline.inference.tiling import merge_tiles


@pytest.mark.parametrize(
    ("length", "size", "overlap"), [(1000, 256, 0.2), (640, 640, 0.2), (300, 640, 0.5), (257, 128, 0)]
)
def test_tiles_cover_every_pixel_and_stay_inside(length: int, size: int, overlap: float) -> None:
    starts = tile_starts(length, size, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        end = min(start + size, length)
        assert start >= 0 and end <= length
        covered[start:end] = True
    assert covered.all()
    if length > size:
        assert all(b - a <= size * (1 - overlap) + 1 for a, b in zip(starts, starts[1:]))


def test_the_grid_goes_row_by_row() -> None:
    grid = tile_grid(300, 200, 128, 0.25)
    assert grid[0] == (0, 0, 128, 128) and grid[-1] == (172, 72, 300, 200)
    assert [y for _, y, _, _ in grid] == sorted(y for _, y, _, _ in grid)


def test_tiles_merge_cut_pieces_into_whole_objects_and_keep_neighbours_apart() -> None:
    left, right = (0, 0, 128, 128), (96, 0, 224, 128)  # a 224 x 128 image in two tiles overlapping by 32 px
    found_left = np.array(
        [
            [110.0, 40.0, 128.0, 60.0, 0.5, 1],  # a scratch cut by the left tile's right border ...
            [20.0, 90.0, 128.0, 110.0, 0.6, 2],  # a long patch, wider than the overlap: cut here ...
            [30.0, 10.0, 60.0, 30.0, 0.9, 0],  # two pits side by side, touching
            [52.0, 12.0, 80.0, 32.0, 0.8, 0],
            [33.0, 12.0, 55.0, 28.0, 0.3, 0],  # the first pit again, nested in its box: a duplicate
        ]
    )
    found_right = np.array(
        [
            [110.0, 40.0, 150.0, 60.0, 0.8, 1],  # ... and seen whole by the right tile
            [96.0, 90.0, 200.0, 110.0, 0.7, 2],  # ... and cut there too
        ]
    )
    merged = merge_tiles([(found_left, left), (found_right, right)], width=224, height=128)
    by_class = {c: merged[merged[:, 5] == c][:, :5].tolist() for c in (0, 1, 2)}
    assert by_class[1] == [[110.0, 40.0, 150.0, 60.0, 0.8]]  # once, whole
    assert by_class[2] == [[20.0, 90.0, 200.0, 110.0, 0.7]]  # the pieces joined
    assert [box[:2] for box in by_class[0]] == [[30.0, 10.0], [52.0, 12.0]]  # neighbours apart, not grown
    assert np.all(np.diff(merged[:, 4]) <= 0)


def test_duplicates_seen_whole_by_two_tiles_count_once_and_the_count_is_capped() -> None:
    left, right = (0, 0, 128, 128), (96, 0, 224, 128)
    twice = np.array([[100.0, 50.0, 120.0, 70.0, 0.9, 0]])  # inside the overlap: whole in both tiles
    scattered = np.array([[5.0 + 4 * i, 100.0, 7.0 + 4 * i, 102.0, 0.1 + i / 100, 1] for i in range(20)])
    merged = merge_tiles([(np.concatenate([twice, scattered]), left), (twice.copy(), right)], 224, 128, max_det=5)
    assert len(merged) == 5 and merged[0].tolist() == [100.0, 50.0, 120.0, 70.0, 0.9, 0]
    assert np.all(np.diff(merged[:, 4]) <= 0)
