"""The tiled validator's coordinates: labels and predictions in the whole image's pixels, plots in the letterbox's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.training.tiled_validation import IN_IMAGE_PIXELS, TiledDetectionValidator


def _validator(tmp_path: Path) -> TiledDetectionValidator:
    validator = TiledDetectionValidator(
        save_dir=tmp_path, args={"imgsz": 64}, tile_size=128, overlap=0.2, image_side=128
    )
    validator.device = torch.device("cpu")
    return validator


def _batch() -> dict[str, Any]:
    """One 300 x 200 (w x h) image letterboxed to 64 x 64: scaled by 64/300, padded 11 px top and bottom."""
    gain = 64 / 300
    return {
        "img": torch.zeros(1, 3, 64, 64),
        "batch_idx": torch.zeros(1),
        "cls": torch.tensor([[9.0]]),  # the letterboxed copy's label: not the one scored
        "bboxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]]),
        "ori_shape": [(200, 300)],
        "ratio_pad": [((gain, gain), (0, 11))],
        "im_file": ["/data/a.png"],
    }


def test_labels_are_scored_in_the_image_pixels_the_merged_tiles_give(tmp_path: Path) -> None:
    validator = _validator(tmp_path)
    # the dataset's label: class 1, centre (150, 50), 30 x 20 px, normalised to the 300 x 200 image
    validator._labels = {"/data/a.png": {"cls": [[1.0]], "bboxes": [[0.5, 0.25, 0.1, 0.1]], "shape": (200, 300)}}
    prepared = validator._prepare_batch(0, _batch())
    assert prepared["cls"].tolist() == [1.0]
    assert prepared["bboxes"].tolist() == [pytest.approx([135, 40, 165, 60])]
    assert (prepared["imgsz"], prepared["ratio_pad"]) == ((200, 300), IN_IMAGE_PIXELS)  # scale_boxes keeps them


def test_predictions_are_drawn_where_the_letterboxed_image_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[torch.Tensor] = []
    monkeypatch.setattr(
        "ultralytics.models.yolo.detect.DetectionValidator.plot_predictions",
        lambda self, batch, preds, ni, max_det=None: drawn.extend(p["bboxes"] for p in preds),
    )
    pred = {"bboxes": torch.tensor([[0.0, 0.0, 300.0, 200.0]]), "conf": torch.ones(1), "cls": torch.zeros(1)}
    _validator(tmp_path).plot_predictions(_batch(), [pred], 0)
    assert drawn[0].tolist() == [pytest.approx([0, 11, 64, 53.6667], abs=1e-3)]
    assert pred["bboxes"].tolist() == [[0.0, 0.0, 300.0, 200.0]]  # the scored predictions are left as they are
