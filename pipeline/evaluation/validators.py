"""The detection validator `evaluate` runs: COCO-format predictions keyed by image path, scored elsewhere.

Ultralytics keys its JSON predictions by file stem (two ``0001.jpg`` in different folders collide) and
scores custom datasets with faster-coco-eval, which it would try to install. This validator records
each prediction's full image path instead and leaves COCO scoring to pycocotools in `pipeline.evaluation.evaluation`.
"""

from __future__ import annotations

from typing import Any

from pipeline.yolo_env import configure_ultralytics

# Before ultralytics' first import, which reads its settings: a private temporary folder, never the user's.
configure_ultralytics()
from ultralytics.models.yolo.detect import DetectionValidator  # noqa: E402

from pipeline.training.tiled_validation import TiledDetectionValidator  # noqa: E402


class PathKeyedValidator(DetectionValidator):
    def pred_to_json(self, predn: dict[str, Any], pbatch: dict[str, Any]) -> None:
        before = len(self.jdict)
        super().pred_to_json(predn, pbatch)
        for record in self.jdict[before:]:
            record["file_name"] = str(pbatch["im_file"])

    def eval_json(self, stats: dict[str, Any]) -> dict[str, Any]:
        return stats  # COCO metrics come from pycocotools, in pipeline.evaluation.evaluation


class TiledPathKeyedValidator(PathKeyedValidator, TiledDetectionValidator):
    """`evaluate` of a model trained on tiles: whole images cut and merged as predict does (its boxes in image
    pixels, as the JSON records them), keyed by path."""
