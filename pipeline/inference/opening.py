"""What a prediction runs, opened from what the user named: a screen bundle, or a checkpoint.

A bundle folder (`pipeline.inference.bundle`: what `export` writes) runs on ONNX Runtime or OpenVINO with the
steps around the network in numpy, and imports neither torch nor ultralytics: a line PC without them runs it.
Anything else is a checkpoint (`pipeline.inference.model`: a ``.pt``, an MLflow model, an ultralytics name),
run by PyTorch or an export of it; torch and ultralytics are imported only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.cpu import LoadProbe
from pipeline.inference.bundle import BundleDetector, OpenedBundle, build_bundle_detector, is_bundle, open_bundle
from pipeline.inference.options import PredictOptions

if TYPE_CHECKING:
    from pipeline.inference.model import Detector, OpenedModel

    Opened = OpenedModel | OpenedBundle


def open_model(source: str, tracking_uri: str = "") -> Opened:
    """The bundle or the checkpoint ``source`` names, opened (a checkpoint under the safe-loading policy); one line
    (ModelError) when it cannot be."""
    if is_bundle(source):
        return open_bundle(source)
    from pipeline.inference.model import open_checkpoint

    return open_checkpoint(source, tracking_uri)


def build_detector(opened: Opened, options: PredictOptions, load: LoadProbe | None = None) -> Detector | BundleDetector:
    """The network of ``opened`` ready for batches (`pipeline.inference.model.build_checkpoint_detector` for a
    checkpoint, `pipeline.inference.bundle.build_bundle_detector` for a bundle)."""
    if isinstance(opened, OpenedBundle):
        return build_bundle_detector(opened, options, load)
    from pipeline.inference.model import build_checkpoint_detector

    return build_checkpoint_detector(opened, options, load)


__all__ = ["build_detector", "open_model"]
