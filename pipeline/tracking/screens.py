"""A screen's thresholds kept with the model they were calibrated for, and read back by predict.

For ``models:/<name>@<alias>`` (or ``/<version>``) they are tags of that model version; for
``runs:/<id>/model`` tags of that run. A version without them has those of the run it was registered from
(a model calibrated as ``runs:/...`` and promoted afterwards keeps its screen). The whole screen.json is an artifact of the calibration run the
``pipeline.screen.run`` tag names, so the tags stay small and the full record stays in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoints import MODEL_URI_SCHEMES, SERVED_SCREEN
from pipeline.drift import DIGEST_TAG
from pipeline.drift import FILENAME as BASELINE
from pipeline.tracking.registry import logged_model, lookup_uri, model_version_of, quick_requests
from pipeline.tracking.store import client_for

THRESHOLDS_TAG = "pipeline.screen.thresholds"  # compact JSON: {class: score}
RUN_TAG = "pipeline.screen.run"  # the calibration run, whose artifacts hold screen/screen.json
ABOUT_TAG = "pipeline.screen.about"  # Screen.describe(): how they were chosen
FALSE_REJECT_TAG = "pipeline.screen.false_reject"  # compact JSON: rate, low, high, how (what predict checks against)
ARTIFACT_PATH = "screen"
TRAINING_BASELINE_PATH = "drift"  # a training run's own drift baseline: drift/drift_baseline.npz, its digest a tag


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
    tags = {THRESHOLDS_TAG: json.dumps(thresholds, separators=(",", ":")), ABOUT_TAG: about[:4000]}
    tags[RUN_TAG] = calibration_run
    if false_reject:
        tags[FALSE_REJECT_TAG] = json.dumps(false_reject, separators=(",", ":"))
    return tag_model(model_uri, tags, tracking_uri)


@contextmanager
def _looked_up(model_uri: str, tracking_uri: str) -> Iterator[tuple[Any, tuple[str, str, str]] | None]:
    """A client of the store and ``model_uri``'s version (or run) (`_target`), MLflow's retries cut short while the
    block runs; None for a file (no store is looked up) or a URI that names neither."""
    if not model_uri.startswith(MODEL_URI_SCHEMES):
        yield None
        return
    uri = lookup_uri(tracking_uri)
    with quick_requests():
        target = _target(model_uri, uri)
        yield (client_for(uri), target) if target is not None else None


def tag_model(model_uri: str, tags: dict[str, str], tracking_uri: str = "") -> str | None:
    """Set ``tags`` on the model version (or run) behind ``model_uri``; returns where, None for a file."""
    with _looked_up(model_uri, tracking_uri) as found:
        if found is None:
            return None
        client, (kind, name, version) = found
        for key, value in tags.items():
            if kind == "version":
                client.set_model_version_tag(name, version, key, value)
            else:
                client.set_tag(name, key, value)
    return f"models:/{name}/{version}" if kind == "version" else f"run {name}"


def stored_screen(model_uri: str, tracking_uri: str = "") -> StoredScreen | None:
    """The thresholds stored with ``model_uri``'s version (or run), None when there are none (or it is a file)."""
    with _looked_up(model_uri, tracking_uri) as found:
        if found is None:
            return None
        client, (kind, name, version) = found
        behind = ""
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


@dataclass(frozen=True)
class ScreenLookup:
    """`stored_screen` asked once for a run (predict's thresholds and its drift check, export's screen and baseline
    share it): what the store answered (None: nothing stored), or how asking failed."""

    stored: StoredScreen | None = None
    error: Exception | None = None


def look_up_screen(model_uri: str, tracking_uri: str = "") -> ScreenLookup:
    """`stored_screen`, its failure kept rather than raised (the caller says it in its own words)."""
    try:
        return ScreenLookup(stored_screen(model_uri, tracking_uri))
    except Exception as exc:  # noqa: BLE001 - a store that does not answer, an MLflow error: each caller's one line
        return ScreenLookup(error=exc)


def stored_screen_file(
    stored: StoredScreen, folder: str | Path, tracking_uri: str = "", name: str = "screen.json"
) -> Path | None:
    """The whole screen.json of a stored screen (an artifact of its calibration run), or the file ``name`` beside it
    (its drift baseline), downloaded into ``folder``; None when the run or the file is not there (a screen stored by
    hand, a run deleted since)."""
    import mlflow

    if not stored.calibration_run:
        return None
    uri = lookup_uri(tracking_uri)
    with quick_requests():
        try:
            found = mlflow.artifacts.download_artifacts(
                run_id=stored.calibration_run,
                artifact_path=f"{ARTIFACT_PATH}/{name}",
                dst_path=str(folder),
                tracking_uri=uri,
            )
        except Exception:  # noqa: BLE001 - MLflow raises many kinds for a file that is not there
            return None
    return Path(found)


@dataclass(frozen=True)
class StoredBaseline:
    """The drift baseline a training recorded in its run (`pipeline.training.drift_baseline`), downloaded."""

    file: Path
    digest: str  # the run's DIGEST_TAG: the file must have it
    run_id: str


def training_baseline_file(model_uri: str, folder: str | Path, tracking_uri: str = "") -> StoredBaseline | None:
    """The drift baseline of the training run behind ``model_uri`` (``runs:/<id>/...``, or a version's run),
    downloaded into ``folder``; None for a file, a run that recorded none (no digest tag) or whose file is gone."""
    import mlflow

    with _looked_up(model_uri, tracking_uri) as found:
        if found is None:
            return None
        client, (kind, name, version) = found
        run_id = client.get_model_version(name, version).run_id if kind == "version" else name
        if not run_id:  # a version registered from files, not from a run
            return None
        digest = client.get_run(run_id).data.tags.get(DIGEST_TAG, "")
        if not digest:
            return None
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{TRAINING_BASELINE_PATH}/{BASELINE}",
                dst_path=str(folder),
                tracking_uri=lookup_uri(tracking_uri),
            )
        except Exception:  # noqa: BLE001 - MLflow raises many kinds for a file that is not there
            return None
    return StoredBaseline(Path(path), digest, run_id)


def serve_screen(model_uri: str, screen_file: str | Path, tracking_uri: str = "") -> str | None:
    """Put ``screen_file`` (a screen.json) into the files of the MLflow 3 logged model behind ``model_uri``, beside its
    ``MLmodel``, where the served model (`pipeline.inference.serving`) reads its thresholds; returns that model's URI
    (``models:/<model id>``), None for a file or a model without a logged model (registered from files, MLflow 2).

    A registered version and the run it came from share one logged model, so this is the screen every URI of those
    weights serves: the last calibration of them replaces an earlier one's (the tags, per version or run, stay as
    each calibration set them). A server already running keeps the screen it loaded until it is restarted."""
    import shutil
    import tempfile

    with _looked_up(model_uri, tracking_uri) as found:
        if found is None:
            return None
        client, target = found
        model_id = _logged_model_id(client, model_uri, target)
        if not model_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:  # uploaded under its own name, whatever the file is called
            named = Path(tmp) / SERVED_SCREEN
            shutil.copyfile(screen_file, named)
            client.log_model_artifact(model_id, str(named))
            baseline = Path(screen_file).with_name(BASELINE)  # the screen names it; the served model's drift check
            if baseline.is_file():
                client.log_model_artifact(model_id, str(baseline))
    return f"models:/{model_id}"


def _logged_model_id(client: Any, model_uri: str, target: tuple[str, str, str]) -> str:
    """The id of the MLflow 3 logged model behind a version (its source, ``models:/<model id>``: MLflow's own stores
    leave the version's ``model_id`` empty) or behind ``runs:/<id>/<name>`` (the run's logged model of that name);
    "" when there is none (a version registered from a run's files, as MLflow 2 did)."""
    kind, name, version = target
    if kind == "version":
        found = client.get_model_version(name, version)
        source = found.source or ""
        model_id = found.model_id or (source.removeprefix("models:/") if source.startswith("models:/") else "")
        return "" if "/" in model_id else model_id
    found = logged_model(client, name, model_uri.removeprefix("runs:/").partition("/")[2].strip("/") or "model")
    return found.model_id if found else ""
