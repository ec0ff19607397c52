"""``data.tile.cut_boxes: ignore``: a cut part's region travels as a label of class ``nc``, leaves the batch before
the loss, and takes the anchors on it that no true box claims out of the classification loss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.data.tiles import ignore_file
from pipeline.training.assignment import detection_losses
from pipeline.training.callbacks.ignore_regions import IgnoreRegions, IgnoringBCE

STRIDES = torch.tensor([8.0, 16.0, 32.0])  # at 64 px: 64 + 16 + 4 anchors


def test_the_anchor_centres_are_ultralytics_in_its_order() -> None:
    from ultralytics.utils.tal import make_anchors

    bce = IgnoringBCE(STRIDES)
    bce.image_hw = (64, 96)
    feats = [torch.zeros(1, 1, 64 // s, 96 // s) for s in (8, 16, 32)]
    points, strides = make_anchors(feats, STRIDES, 0.5)
    assert torch.equal(bce.centres(torch.device("cpu")), points * strides)
    assert bce.centres(torch.device("cpu"))[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]]


def test_anchors_in_a_region_that_no_true_box_claims_get_no_loss() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 84, 3), torch.zeros(2, 84, 3)
    target[0, 0, 1] = 0.7  # anchor 0 of image 0 (centre 4, 4): a true box claims it
    bce = IgnoringBCE(STRIDES)
    plain = torch.nn.BCEWithLogitsLoss(reduction="none")(logits, target)
    assert torch.equal(bce(logits, target), plain)  # no regions: ultralytics' BCE

    bce.regions, bce.image_hw = torch.tensor([[0.0, 0.0, 0.0, 20.0, 12.0]]), (64, 64)  # image 0, x 0-20, y 0-12
    got = bce(logits, target)
    centres = bce.centres(torch.device("cpu"))
    inside = (centres[:, 0] <= 20) & (centres[:, 1] <= 12)
    assert int(inside.sum()) == 7  # (4|12|20, 4|12) on the stride-8 grid and (8, 8) on stride 16's; (16, 16) is out
    ignored = inside.clone()
    ignored[0] = False  # claimed: learns as always
    assert (got[0, ignored] == 0).all() and torch.equal(got[0, ~ignored], plain[0, ~ignored])
    assert torch.equal(got[1], plain[1])  # the other image has no region
    assert bce.anchors_ignored == 6


def test_the_batch_loses_the_regions_rows_and_the_loss_gets_them_in_pixels() -> None:
    regions = IgnoreRegions()
    regions.ignore_class = 2
    bce = IgnoringBCE(STRIDES)
    regions.installed = [bce]
    batch = {
        "img": torch.zeros(2, 3, 64, 128),
        "cls": torch.tensor([[0.0], [2.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 0.25], [0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 1, 1]]),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0, 1.0]),
    }
    taken = regions.take(batch)
    assert taken["cls"].view(-1).tolist() == [0.0, 1.0] and taken["batch_idx"].tolist() == [0.0, 1.0]
    assert torch.allclose(taken["bboxes"], torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]))
    assert bce.regions.tolist() == [[0.0, 0.0, 24.0, 64.0, 40.0], [1.0, 0.0, 0.0, 128.0, 64.0]]  # x1 y1 x2 y2 px
    assert bce.image_hw == (64, 128)


def test_a_tiles_regions_become_labels_of_the_extra_class_hidden_from_ultralytics_readers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, ignore = tmp_path / "images" / "train", tmp_path / "ignore" / "train"
    images.mkdir(parents=True)
    ignore.mkdir(parents=True)
    (ignore / "a.txt").write_text("1 0.9 0.5 0.2 0.4\n0.1 0.2\n")  # a damaged second line: left out, named
    boxes = np.array([[0.2, 0.2, 0.1, 0.1]], np.float32)
    labels = [
        {"im_file": str(images / "a.png"), "cls": np.zeros((1, 1), np.float32), "bboxes": boxes},
        {"im_file": str(images / "b.png"), "cls": np.zeros((0, 1), np.float32), "bboxes": np.zeros((0, 4))},
    ]
    dataset = SimpleNamespace(labels=labels)
    regions = IgnoreRegions()
    assert regions.present([str(images / "a.png")]) and not regions.present([str(tmp_path / "other" / "a.png")])
    flat = tmp_path / "flat"  # labels beside the images, no images/ folder: never read as regions
    flat.mkdir()
    (flat / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert ignore_file(flat / "a.png") is None and not regions.present([str(flat / "a.png")])
    with caplog.at_level("WARNING", logger="pipeline.training"):
        assert regions.add_to(dataset, ignore_class=3) == 1
    assert caplog.messages == [
        f"train: {ignore / 'a.txt'}:2: malformed line: expected 'class cx cy w h', got 2 fields; left out"
    ]
    assert labels[0]["cls"].ravel().tolist() == [0.0, 3.0]
    assert np.allclose(labels[0]["bboxes"], [[0.2, 0.2, 0.1, 0.1], [0.9, 0.5, 0.2, 0.4]])
    assert len(labels[1]["cls"]) == 0
    with regions.left_out(dataset):
        assert labels[0]["cls"].ravel().tolist() == [0.0] and labels[0]["bboxes"].tolist() == boxes.tolist()
    assert labels[0]["cls"].ravel().tolist() == [0.0, 3.0]


@pytest.mark.parametrize("cfg, branches", [("yolo11n.yaml", [""]), ("yolo26n.yaml", ["", "one2one"])])
def test_every_detection_loss_of_the_real_criterion_leaves_a_region_out(cfg: str, branches: list[str]) -> None:
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=2, verbose=False)
    model.args = get_cfg()
    regions = IgnoreRegions()
    regions.ignore_class = 2
    regions.on_train_epoch_start(SimpleNamespace(model=model))  # builds the criterion as ultralytics would
    assert sorted(detection_losses(model.criterion)) == branches
    assert len(regions.installed) == len(branches)

    def batch(with_region: bool) -> dict:
        rows = [([0.0], [0.3, 0.3, 0.2, 0.2], 0.0)] + ([([2.0], [0.75, 0.5, 0.5, 1.0], 0.0)] if with_region else [])
        return {
            "img": torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
            "cls": torch.tensor([r[0] for r in rows]),
            "bboxes": torch.tensor([r[1] for r in rows]),
            "batch_idx": torch.tensor([r[2] for r in rows]),
        }

    model.eval()  # the same predictions for both batches; the loss does not care
    losses = {}
    for with_region in (False, True):
        b = regions.take(batch(with_region))
        assert b["cls"].view(-1).tolist() == [0.0]
        _, items = model.criterion(model(b["img"]), b)
        losses[with_region] = items
    assert losses[True]["cls_loss"] < losses[False]["cls_loss"]  # the right half's background left out
    assert losses[True]["box_loss"] == pytest.approx(float(losses[False]["box_loss"]))
    assert all(bce.anchors_ignored > 0 for bce in regions.installed)
