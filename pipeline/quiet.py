"""Other libraries' housekeeping output, shown only behind ``-v``.

The normal output is this tool's lines and ultralytics' training table. Hidden unless verbose:
ultralytics' settings banner (its settings file is a fresh temporary one in every process, see
`pipeline.yolo_env`), its "Optimizer stripped from ..." lines at the end of a training (some name
temporary files), MLflow's database-creation and system-metrics INFO lines and its artifact progress bars. Nothing here
imports either library: logger filters and levels set before their import stay in force after it.
"""

from __future__ import annotations

import logging
import os

_ULTRALYTICS_HIDDEN = ("Creating new Ultralytics Settings", "Optimizer stripped from")
_MLFLOW_LOGGERS = (
    "mlflow.store.db.utils",  # "Creating initial MLflow database tables...", "Updating database tables"
    "mlflow.system_metrics",  # "Started monitoring system metrics.", "Skip logging GPU metrics."
)
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # MLflow reads it at each upload or download


class _Housekeeping(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_ULTRALYTICS_HIDDEN)


_FILTER = _Housekeeping()
_bar_hidden_here = False  # whether this module set the variable (a user's own setting is never changed)


def set_verbose(verbose: bool) -> None:
    """Show (True) or hide (False) the housekeeping output; call it before ultralytics or MLflow is imported."""
    global _bar_hidden_here
    ultralytics = logging.getLogger("ultralytics")
    if verbose:
        ultralytics.removeFilter(_FILTER)
        for name in _MLFLOW_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        if _bar_hidden_here:
            os.environ.pop(_PROGRESS_BAR, None)
            _bar_hidden_here = False
        return
    ultralytics.addFilter(_FILTER)
    for name in _MLFLOW_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if _PROGRESS_BAR not in os.environ:
        os.environ[_PROGRESS_BAR] = "false"
        _bar_hidden_here = True
