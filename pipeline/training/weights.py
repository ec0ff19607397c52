"""Resolve ``model.weights`` to something ultralytics can build, falling back when offline.

An architecture ``.yaml`` (a file, or a name ultralytics ships such as ``yolo11n.yaml``, or one this package
ships in ``pipeline/models/`` such as ``yolo11n-p2.yaml``) trains from scratch. A ``.pt`` is a local file or an ultralytics release name; a name that cannot be downloaded
(offline, blocked, unknown) falls back to its architecture YAML with one line saying so. A model in
MLflow (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/model``) is this pipeline's own
logged checkpoint: its ``weights`` artifact is downloaded (the pyfunc is never unpickled) and read
like a local ``.pt``; the training records it as its parent.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoints import MODEL_URI_SCHEMES, CheckpointError, read_checkpoint
from pipeline.files import cache_dir
from pipeline.messages import UserError, first_line
from pipeline.redact import redact_text
from pipeline.yaml_load import read_yaml

LOG = logging.getLogger("pipeline.training")


class WeightsError(UserError, ValueError):
    """``model.weights`` names nothing usable; the message is one line."""


@dataclass(frozen=True)
class Parent:
    """The MLflow model a training starts from, pinned: an alias may move on, the version it named does not."""

    uri: str  # as the config gives it
    pinned: str  # models:/<name>/<version> for an alias; the URI itself otherwise
    version: str | None  # the registry version, for models:/ URIs
    run_id: str | None  # the run the model came from
    classes: tuple[str, ...]  # the parent's class names, in index order

    def lineage(self) -> str:
        """``fine-tuned from models:/defects@champion (version 3, run abc123)``: for the summary and the log."""
        about = [f"version {self.version}"] if self.version else []
        about += [f"run {self.run_id}"] if self.run_id else []
        return f"fine-tuned from {self.uri}" + (f" ({', '.join(about)})" if about else "")

    def tags(self) -> dict[str, str]:
        tags = {"pipeline.parent_model": self.uri}
        if self.version:
            tags["pipeline.parent_model_version"] = self.pinned
        if self.run_id:
            tags["pipeline.parent_run"] = self.run_id
        return tags


@dataclass(frozen=True)
class ResolvedWeights:
    model: str  # what ultralytics is given: a .pt path or an architecture yaml
    pretrained: bool
    note: str = ""  # set when we fell back
    parent: Parent | None = None  # set for a model from MLflow


def weights_cache() -> Path:
    return Path(os.environ.get("YOLO_PIPELINE_WEIGHTS_DIR") or cache_dir() / "weights")


def _architecture_exists(yaml_name: str) -> bool:
    """True for a name ultralytics ships (``yolo11n.yaml`` is ``yolo11.yaml`` at scale n)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        return _is_architecture(yaml_model_load(yaml_name))
    except Exception:  # noqa: BLE001 - ultralytics raises several kinds for "not found"
        return False


OWN_ARCHITECTURES = Path(__file__).resolve().parents[1] / "models"  # pipeline/models: what ultralytics lacks


def _own_architecture(name: str) -> str | None:
    """The path ultralytics is given for an architecture this package ships, by its scaled name: ``yolo11n-p2.yaml``
    is ``pipeline/models/yolo11-p2.yaml`` at scale n. Ultralytics reads the scale off the name and loads the unscaled
    file beside it (`yaml_model_load`), so the scaled path itself need not exist."""
    unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(name).stem) + Path(name).suffix
    return str(OWN_ARCHITECTURES / name) if (OWN_ARCHITECTURES / unscaled).is_file() else None


def _is_architecture(document: Any) -> bool:
    """What ultralytics' model builder needs: a mapping with ``backbone`` and ``head`` layer lists."""
    return isinstance(document, dict) and all(isinstance(document.get(key), list) for key in ("backbone", "head"))


def _architecture_file(path: Path) -> ResolvedWeights:
    document = read_yaml(path, WeightsError, "architecture file")
    if not _is_architecture(document):
        raise WeightsError(
            f"model.weights: {path}: not a model architecture (an ultralytics model YAML has backbone: and head: lists)"
        )
    return ResolvedWeights(str(path.resolve()), pretrained=False)


def _read(path: Path, what: str = "model.weights") -> dict[str, Any]:
    """A .pt read once under the safe-loading policy: a text file or a code-running pickle stops here."""
    try:
        return read_checkpoint(path, what)
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from None


def _checkpoint(path: Path) -> ResolvedWeights:
    _read(path)
    return ResolvedWeights(str(path.resolve()), pretrained=True)


def _class_names(checkpoint: dict[str, Any]) -> tuple[str, ...]:
    """The checkpoint's class names by index (ultralytics keeps them as ``model.names``, a dict or a list)."""
    model = checkpoint.get("ema") or checkpoint.get("model")
    names = getattr(model, "names", None) or {}
    if isinstance(names, dict):
        return tuple(str(names[key]) for key in sorted(names, key=int))
    return tuple(str(name) for name in names)


def _mlflow_model(spec: str, tracking_uri: str) -> ResolvedWeights:
    """A model this pipeline logged to MLflow: its checkpoint downloaded (nothing unpickled), then read safely."""
    from pipeline.tracking.registry import model_weights

    try:
        found = model_weights(spec, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - a store away, an unknown alias or run, a failed download: one line
        reason = redact_text(first_line(exc)).removeprefix(f"{spec}: ")
        raise WeightsError(f"model.weights: {spec}: {reason}") from None
    checkpoint = _read(found.path, f"model.weights: {spec}:")
    parent = Parent(spec, found.pinned, found.version, found.run_id, _class_names(checkpoint))
    LOG.info("model.weights: %s", parent.lineage())
    return ResolvedWeights(str(found.path.resolve()), pretrained=True, parent=parent)


def resolve_weights(spec: str, tracking_uri: str = "") -> ResolvedWeights:
    """What ``model.weights`` names, ready for ultralytics; ``tracking_uri`` is where ``models:/``/``runs:/`` live
    (empty: $MLFLOW_TRACKING_URI, else the local SQLite file, as for the training's own run)."""
    spec = spec.strip()
    if spec.startswith(MODEL_URI_SCHEMES):
        return _mlflow_model(spec, tracking_uri)
    path = Path(spec).expanduser()
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return _architecture_file(path)
        if path.parent == Path(".") and _architecture_exists(spec):
            return ResolvedWeights(spec, pretrained=False)
        if path.parent == Path(".") and (own := _own_architecture(spec)) is not None:
            return ResolvedWeights(own, pretrained=False)
        raise WeightsError(f"model.weights: {spec}: no such architecture file or ultralytics model YAML")
    if path.suffix != ".pt":
        raise WeightsError(f"model.weights: {spec}: expected a .pt checkpoint or an architecture .yaml")
    if path.is_file():
        return _checkpoint(path)
    if path.parent != Path("."):
        raise WeightsError(f"model.weights: {spec}: no such file")
    cached = weights_cache() / path.name
    if cached.is_file():
        return _checkpoint(cached)
    fallback = path.with_suffix(".yaml").name
    try:
        from ultralytics.utils import is_online
        from ultralytics.utils.downloads import attempt_download_asset

        if not is_online():  # no network (or $YOLO_OFFLINE): don't wait on download timeouts
            raise ConnectionError("offline")
        cached.parent.mkdir(parents=True, exist_ok=True)
        downloaded = Path(attempt_download_asset(str(cached)))
        if downloaded.is_file():
            return _checkpoint(downloaded)
        reason = "the download produced no file"
    except Exception as exc:  # noqa: BLE001 - offline, blocked or unknown: all mean "no weights"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not _architecture_exists(fallback):
        raise WeightsError(f"model.weights: {spec}: cannot download ({reason}) and no {fallback} to fall back to")
    note = f"model.weights: cannot download {spec} ({reason}); training from the architecture {fallback} instead (no pretrained weights)"
    LOG.warning(note)
    return ResolvedWeights(fallback, pretrained=False, note=note)


def _listed(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}, ... {len(names) - limit} more]" if len(names) > limit else f"[{shown}]"


def class_change_note(parent: Sequence[str], data: Sequence[str]) -> str:
    """One line on what ultralytics does with a parent's class layer when the data's classes differ; "" when not.

    Ultralytics (8.4) builds the model for the data's classes and loads every tensor whose name and shape
    match (`DetectionModel.load`); the class-logit rows of the detection head are copied by class name
    (case and spaces aside), and a class the parent does not have starts from a fresh layer. With no name
    in common and the same count the rows are copied by index, a different class behind each.
    """
    parent, data = tuple(parent), tuple(data)
    if not parent or [_norm(c) for c in parent] == [_norm(c) for c in data]:
        return ""
    head = (
        f"model.weights: the parent has {len(parent)} classes {_listed(parent)}, the data {len(data)} {_listed(data)}"
    )
    known = {_norm(c) for c in parent}
    kept, fresh = [c for c in data if _norm(c) in known], [c for c in data if _norm(c) not in known]
    if not kept and len(parent) == len(data):
        pairs = ", ".join(f"{d} from {p}" for d, p in list(zip(data, parent, strict=True))[:10])
        return (
            f"{head}: no name in common, so ultralytics keeps the parent's class layer in index order "
            f"({pairs}); every other layer transfers"
        )
    if not kept:
        return f"{head}: the detection head's class layer starts fresh (ultralytics transfers every other layer)"
    how = f"{_listed(kept)} start from the parent's class of the same name"
    how += f", {_listed(fresh)} fresh" if fresh else ""
    return f"{head}: {how} (ultralytics maps the class layer by name and transfers every other layer)"


def _norm(name: str) -> str:
    return str(name).strip().lower()  # as ultralytics matches class names
