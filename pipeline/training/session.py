"""What a training process needs to know beyond ultralytics' own arguments, kept as a file.

The session file sits in the training folder; its path travels in ``$YOLO_PIPELINE_SESSION`` so a
trainer rebuilt in another process (multi-GPU relaunch, resume) finds the same config and spool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config

SESSION_FILE = "session.json"


@dataclass
class Session:
    config: Config
    save_dir: Path
    dataset: dict[str, Any] = field(default_factory=dict)

    @property
    def spool_dir(self) -> Path:
        return self.save_dir / "tracking"

    @property
    def tracking_enabled(self) -> bool:
        return self.config.tracking.enabled

    def tracker(self) -> Any:
        from pipeline.tracking import Tracker

        t = self.config.tracking
        return Tracker(
            self.spool_dir,
            uri=t.uri,
            experiment=t.experiment,
            run_name=t.run_name or self.save_dir.name,
            flush_interval_s=t.flush_interval_s,
            retry_interval_s=t.retry_interval_s,
            request_timeout_s=t.request_timeout_s,
        )

    def save(self) -> Path:
        path = self.save_dir / SESSION_FILE
        data = {**asdict(self), "config": self.config.to_dict(), "save_dir": str(self.save_dir)}
        path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Session:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["config"] = Config.model_validate(data["config"])
        data["save_dir"] = Path(data["save_dir"])
        return cls(**data)
