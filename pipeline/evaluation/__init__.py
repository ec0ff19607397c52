"""Evaluate a trained detector on a labelled split.

- `evaluation` (with `validators`): ultralytics' and COCO's metrics from the same predictions;
- `matching`: detections matched to ground-truth objects as COCO matches them (also what the screen's
  operating points count);
- `review`: the images a screen got wrong on the split, as a review queue (``evaluate --review``).
"""
