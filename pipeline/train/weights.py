"""Resolve ``model.weights`` to something ultralytics can build, falling back when offline.

An architecture ``.yaml`` (a file, or a name ultralytics ships such as ``yolo11n.yaml``) trains from
scratch. A ``.pt`` is a local file or an ultralytics release name; a name that cannot be downloaded
(offline, blocked, unknown) falls back to its architecture YAML with one line saying so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoints import CheckpointError, read_checkpoint
from pipeline.files import cache_dir
from pipeline.messages import UserError
from pipeline.yaml_load import read_yaml

LOG = logging.getLogger("pipeline.train")


class WeightsError(UserError, ValueError):
    """``model.weights`` names nothing usable; the message is one line."""


@dataclass(frozen=True)
class ResolvedWeights:
    model: str  # what ultralytics is given: a .pt path or an architecture yaml
    pretrained: bool
    note: str = ""  # set when we fell back


def weights_cache() -> Path:
    return Path(os.environ.get("YOLO_PIPELINE_WEIGHTS_DIR") or cache_dir() / "weights")


def _architecture_exists(yaml_name: str) -> bool:
    """True for a name ultralytics ships (``yolo11n.yaml`` is ``yolo11.yaml`` at scale n)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        return _is_architecture(yaml_model_load(yaml_name))
    except Exception:  # noqa: BLE001 - ultralytics raises several kinds for "not found"
        return False


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


def _checkpoint(path: Path) -> ResolvedWeights:
    """A local .pt, read once under the safe-loading policy: a text file or a code-running pickle stops here."""
    try:
        read_checkpoint(path, "model.weights")
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from None
    return ResolvedWeights(str(path.resolve()), pretrained=True)


def resolve_weights(spec: str) -> ResolvedWeights:
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return _architecture_file(path)
        if path.parent == Path(".") and _architecture_exists(spec):
            return ResolvedWeights(spec, pretrained=False)
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
