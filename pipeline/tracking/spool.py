"""A write-ahead journal for tracking records, so that nothing is lost and nothing is sent twice.

Every record (metrics, params, tags, artifacts, the model, the run's end) is appended to
``journal.jsonl`` before anything tries to send it, and ``state.json`` remembers the run id and the
highest sequence number the tracking server has acknowledged. After a crash, an outage or a kill,
whatever is past that number is sent again; MLflow ignores a metric row it already has (same key,
step, timestamp and value), and the timestamps are fixed when a record is written, so a resend is
harmless. Files to upload are copied into the spool when logged, so a later overwrite (``last.pt``,
``results.csv``) cannot change what was recorded.

One process writes a spool at a time: the training's `Tracker` holds it (`pipeline.destinations.writer_lock`)
from its start to its end, and `sync` while it sends, so two processes never send the same record. Others
only read it (`spool_status`), and never cut or change anything.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import write_atomic

JOURNAL = "journal.jsonl"
STATE = "state.json"
FILES = "files"
REFUSED = "refused.jsonl"


def original_name(spooled: Path) -> str:
    """A spooled file's own name, without the ``<seq>-`` prefix `Spool.append` gives it."""
    return spooled.name.split("-", 1)[1]


@dataclass(frozen=True)
class SpoolStatus:
    """What a spool folder says about its run, for those outside tracking."""

    run_id: str | None  # None until the server has created the run
    uri: str | None  # the tracking URI the records go to, without credentials
    pending: int  # records not yet acknowledged by the server


def is_spool(directory: str | Path) -> bool:
    """True when ``directory`` holds a tracking spool (its state has been saved)."""
    return Spool.exists(directory)


def spool_status(directory: str | Path) -> SpoolStatus | None:
    """The run id, tracking URI and pending record count of the spool in ``directory``; None when it has none."""
    if not Spool.exists(directory):
        return None
    spool = Spool(directory, read_only=True)
    return SpoolStatus(spool.state.get("run_id"), spool.state.get("uri"), len(spool.pending()))


class Spool:
    """The on-disk journal of one tracked run (thread-safe). Its writer holds its `writer_lock` (see the module
    doc); ``read_only``: only read, by anyone, at any time (an unfinished last line is left to the writer)."""

    def __init__(self, directory: str | Path, read_only: bool = False):
        self.dir = Path(directory)
        self.read_only = read_only
        if not read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / FILES).mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self.state: dict[str, Any] = self._read_state()
        self._records = self._read_journal()
        self._next_seq = max((r["seq"] for r in self._records), default=0) + 1

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / STATE).is_file()

    def _read_state(self) -> dict[str, Any]:
        path = self.dir / STATE
        if not path.exists():
            return {"run_id": None, "acked": 0}
        return json.loads(path.read_text(encoding="utf-8"))

    def _read_journal(self) -> list[dict[str, Any]]:
        path = self.dir / JOURNAL
        if not path.exists():
            return []
        records: list[dict[str, Any]] = []
        whole_bytes = 0
        with open(path, "rb") as journal:
            for line in journal:
                if not line.endswith(b"\n"):
                    break
                try:
                    records.append(json.loads(line))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    break
                whole_bytes += len(line)
        if whole_bytes < path.stat().st_size and not self.read_only:
            # A kill mid-write tore the last line; that record was never acknowledged to anyone. Cut it off,
            # so the next append starts on a fresh line instead of gluing onto the torn one.
            with open(path, "r+b") as journal:
                journal.truncate(whole_bytes)
        return records

    def update_state(self, **values: Any) -> None:
        with self._lock:
            self.state.update(values)
            write_atomic(self.dir / STATE, json.dumps(self.state, indent=1))

    def append(self, record: dict[str, Any], files: dict[str, str | Path] | None = None) -> int:
        """Journal one record (copying ``files`` into the spool first); returns its sequence number."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            stored = {}
            for key, source in (files or {}).items():
                source = Path(source)
                target = self.dir / FILES / f"{seq:08d}-{source.name}"
                if source.is_dir():
                    shutil.copytree(source, target)
                else:
                    shutil.copy2(source, target)
                stored[key] = str(target.relative_to(self.dir))
            record = {"seq": seq, **record, **stored}
            with open(self.dir / JOURNAL, "a", encoding="utf-8") as journal:
                journal.write(json.dumps(record, allow_nan=True) + "\n")
                journal.flush()
            self._records.append(record)
            return seq

    def pending(self) -> list[dict[str, Any]]:
        """Records not yet acknowledged by the server, oldest first."""
        with self._lock:
            acked = self.state.get("acked", 0)
            return [r for r in self._records if r["seq"] > acked]

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._records if kind is None or r["kind"] == kind]

    def acknowledge(self, seq: int) -> None:
        """Everything up to ``seq`` reached the server; its spooled files are no longer needed."""
        with self._lock:
            done = [r for r in self._records if self.state.get("acked", 0) < r["seq"] <= seq]
        # Record the acknowledgement before deleting: a kill in between leaves stray files, never a record
        # whose file is gone.
        self.update_state(acked=max(seq, self.state.get("acked", 0)))
        for record in done:
            for value in record.values():
                if isinstance(value, str) and value.startswith(f"{FILES}/"):
                    path = self.dir / value
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def set_aside(self, records: list[dict[str, Any]], reason: str) -> None:
        """Keep records the server refused in ``refused.jsonl`` (with why), out of the way of the rest."""
        with self._lock, open(self.dir / REFUSED, "a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps({**record, "refused_because": reason}, allow_nan=True) + "\n")

    def path(self, stored: str) -> Path:
        return self.dir / stored
