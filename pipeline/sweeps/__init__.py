"""Sweeps: many trainings of one config as child runs of one parent run.

- `sweep`: the plan (every combination of a grid, or configs drawn from a space) and the local engine, one
  child after another;
- `ray_sweep` (with `tune_trial`, `numbered_optuna`): the same plan run by Ray Tune, trials in parallel;
- `search_space`: the ``--space`` ranges and the configs drawn from them.
"""
