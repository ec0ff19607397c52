"""Across trainings: sweep a grid, compare runs, evaluate a model, calibrate its screen, promote it through gates.

- `sweep`: every combination of a grid trained as child runs of one parent run;
- `comparison`: runs side by side (table, charts, HTML report);
- `evaluation` (with `validators`): ultralytics' and COCO's metrics from the same predictions;
- `matching`, `operating_points`, `calibration` (with `calibration_report`), `screen_check`: a defect screen's
  per-class thresholds chosen on one split and checked on another;
- `review`: the images a screen got wrong on a labelled split, as a review queue;
- `gates`, `promotion`: a run's model registered, with an alias, the reason and, with data, the gates it passed;
- `commands`: the command-line part of them.
"""
