"""Whether checkpoints load safely in this process: the user's opt-out, and ultralytics' switches set to match.

Kept apart from `pipeline.checkpoints` (which loads through ultralytics) so that `pipeline.yolo_env` can apply
the policy each time it configures ultralytics without importing the loader back.
"""

from __future__ import annotations

import os
import sys

TRUST_ENV = "YOLO_PIPELINE_TRUST_CHECKPOINTS"


def trusted() -> bool:
    """Whether the user opted out of safe loading for this process."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def apply_load_policy() -> None:
    """Make ultralytics load checkpoints safely in this process, unless the user trusts them.

    The environment variable reaches ultralytics when it is first imported (and any worker process it
    starts); the module flags cover a process where it was imported already. Cheap: call it before
    every load, so a change of $YOLO_PIPELINE_TRUST_CHECKPOINTS in this process takes effect.
    """
    safe = not trusted()
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1" if safe else "0"
    for module in ("ultralytics.utils", "ultralytics.nn.tasks"):
        if module in sys.modules:
            sys.modules[module].SAFE_LOAD = safe
