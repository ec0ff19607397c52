"""Across trainings: sweep a grid, compare runs, evaluate a model, promote the best to the registry.

- `sweep`: every combination of a grid trained as child runs of one parent run;
- `comparison`: runs side by side (table, charts, HTML report);
- `evaluation` (with `validators`): ultralytics' and COCO's metrics from the same predictions;
- `promotion`: a run's model registered, with an alias and the reason;
- `commands`: the command-line part of the four.
"""
