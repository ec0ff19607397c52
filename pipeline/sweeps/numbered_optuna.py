"""Ray Tune's Optuna searcher, numbering its trials: each suggested config carries ``index``, 0, 1, 2, ...

A grid's trials are numbered by their place in the plan; Optuna's exist only once suggested, and Tune's
ids for them are random. The number becomes the child's ``pipeline.sweeps.index`` (how a resumed sweep
finds a trial's run). It is part of the searcher's state, so a restored sweep goes on counting.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class NumberedOptunaSearch(OptunaSearch):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.suggested = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):  # None (wait) or FINISHED pass through
            config = {**config, "index": self.suggested}
            self.suggested += 1
        return config
