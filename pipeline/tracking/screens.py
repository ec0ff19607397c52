"""A screen's thresholds kept with the model they were calibrated for, and read back by predict.

For ``models:/<name>@<alias>`` (or ``/<version>``) they are tags of that model version; for
``runs:/<id>/model`` tags of that run. A version without them has those of the run it was registered from
(a model calibrated as ``runs:/...`` and promoted afterwards keeps its screen). The whole screen.json is an artifact of the calibration run the
``pipeline.screen.run`` tag names, so the tags stay small and the full record stays in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.checkpoints import MODEL_URI_SCHEMES
from pipeline.tracking.registry import lookup_uri, model_version_of, quick_requests
from pipeline.tracking.store import client_for

THRESHOLDS_TAG = "pipeline.screen.thresholds"  # compact JSON: {class: score}
RUN_TAG = "pipeline.screen.run"  # the calibration run, whose artifacts hold screen/screen.json
ABOUT_TAG = "pipeline.screen.about"  # Screen.describe(): how they were chosen
FALSE_REJECT_TAG = "pipeline.screen.false_reject"  # compact JSON: rate, low, high, how (what predict checks against)
ARTIFACT_PATH = "screen"


@dataclass(frozen=True)
class StoredScreen:
    thresholds: dict[str, float]
    about: str  # how they were chosen
    source: str  # where they were read: "models:/name/3" or "run <id>"
    calibration_run: str
    false_reject: dict[str, Any] = field(default_factory=dict)  # the calibration's false-reject rate, if stored


def _target(model_uri: str, uri: str) -> tuple[str, str, str] | None:
    """("version", name, version) or ("run", run_id, "") for a model URI; None for a local file."""
    if model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
        return ("run", run_id, "") if run_id else None
    if model_uri.startswith("models:/"):
        _, version = model_version_of(model_uri, uri)
        if version is None:
            return None
        name = model_uri.removeprefix("models:/").split("/", 1)[0].split("@", 1)[0]
        return "version", name, version
    return None


def attach_screen(
    model_uri: str,
    thresholds: dict[str, float],
    about: str,
    calibration_run: str,
    tracking_uri: str = "",
    false_reject: dict[str, Any] | None = None,
) -> str | None:
    """Tag the model version (or run) behind ``model_uri`` with the thresholds (and the false-reject rate they were
    calibrated to); returns where, None for a file."""
    uri = lookup_uri(tracking_uri)
    with quick_requests():
        target = _target(model_uri, uri)
        if target is None:
            return None
        tags = {THRESHOLDS_TAG: json.dumps(thresholds, separators=(",", ":")), ABOUT_TAG: about[:4000]}
        tags[RUN_TAG] = calibration_run
        if false_reject:
            tags[FALSE_REJECT_TAG] = json.dumps(false_reject, separators=(",", ":"))
        client = client_for(uri)
        kind, name, version = target
        for key, value in tags.items():
            if kind == "version":
                client.set_model_version_tag(name, version, key, value)
            else:
                client.set_tag(name, key, value)
    return f"models:/{name}/{version}" if kind == "version" else f"run {name}"


def stored_screen(model_uri: str, tracking_uri: str = "") -> StoredScreen | None:
    """The thresholds stored with ``model_uri``'s version (or run), None when there are none (or it is a file)."""
    if not model_uri.startswith(MODEL_URI_SCHEMES):
        return None
    uri = lookup_uri(tracking_uri)
    with quick_requests():
        target = _target(model_uri, uri)
        if target is None:
            return None
        kind, name, version = target
        client, behind = client_for(uri), ""
        if kind == "version":
            found = client.get_model_version(name, version)
            tags = found.tags
            if THRESHOLDS_TAG not in tags and found.run_id:  # calibrated as runs:/<id>/model before it was promoted
                behind = f" (the run of models:/{name}/{version})"
                kind, name, tags = "run", found.run_id, client.get_run(found.run_id).data.tags
        else:
            tags = client.get_run(name).data.tags
    if THRESHOLDS_TAG not in tags:
        return None
    try:
        thresholds = {str(k): float(v) for k, v in json.loads(tags[THRESHOLDS_TAG]).items()}
    except (ValueError, TypeError, AttributeError):
        return None  # a hand-edited tag that is not our JSON: as if none were stored (predict says which it uses)
    source = f"models:/{name}/{version}" if kind == "version" else f"run {name}{behind}"
    try:
        false_reject = json.loads(tags.get(FALSE_REJECT_TAG, "{}"))
    except ValueError:
        false_reject = {}  # hand-edited: predict then has no rate to check its fails against
    false_reject = false_reject if isinstance(false_reject, dict) else {}
    return StoredScreen(thresholds, tags.get(ABOUT_TAG, ""), source, tags.get(RUN_TAG, ""), false_reject)
