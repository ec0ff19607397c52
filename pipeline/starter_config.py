"""The commented starter config ``yolo-pipeline init`` writes, generated from the config's own models.

Every section and key of `pipeline.config.Config` with its default and a one-line comment (the field's
description, else its type and range), so the file cannot drift from the code and loads back to
exactly the defaults. A few keys are written commented out because setting them at all changes what
happens, not only their value: a preset fills in only the augment keys a config leaves unset, and a
chosen ``train.workers`` is warned about on a CPU.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic.fields import FieldInfo

from pipeline.augment.presets import PRESETS
from pipeline.config import Config, ConfigError

COMMENT_COLUMN = 32
# Keys written commented out, with why: present in the file, they would mean "chosen by the user".
LEFT_UNSET = {
    ("train", "workers"): "uncomment to choose; ultralytics uses 0 on a CPU",
    **{
        ("augment", key): "left unset so that augment.preset can set it"
        for preset in PRESETS.values()
        for key in preset.settings
    },
}

_BOUNDS = {  # pydantic's constraint -> (how a comment says it, the attribute holding the limit)
    annotated_types.Gt: (">", "gt"),
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Lt: ("<", "lt"),
    annotated_types.Le: ("<=", "le"),
}


def _hint(field: FieldInfo) -> str:
    """What a field without a description admits: 'true or false', 'an integer > 0', 'a number from 0 to 1'."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        choices = [str(choice) for choice in typing.get_args(annotation)]
        return f"{', '.join(choices[:-1])} or {choices[-1]}"
    if annotation is bool:
        return "true or false"
    kind = {int: "an integer", float: "a number"}.get(annotation, "text")
    bounds = {
        _BOUNDS[type(item)][0]: getattr(item, _BOUNDS[type(item)][1])
        for item in field.metadata
        if type(item) in _BOUNDS
    }
    if ">=" in bounds and "<=" in bounds:
        return f"{kind} from {bounds['>=']:g} to {bounds['<=']:g}"
    return " ".join([kind, *(f"{op} {limit:g}" for op, limit in bounds.items())])


def _comment(field: FieldInfo) -> str:
    """The field's description, with the choices when it has a fixed set of them; else what it admits."""
    if not field.description:
        return _hint(field)
    if typing.get_origin(field.annotation) is typing.Literal:
        return f"{field.description} ({_hint(field)})"
    return field.description


def _line(key: str, value: Any, comment: str, unset: str) -> str:
    # A one-item flow list, brackets cut off: the value in YAML on one line (a bare scalar would get a "..." line).
    value = yaml.safe_dump([value], default_flow_style=True, width=1_000_000).strip()[1:-1]
    text = f"  # {key}: {value}" if unset else f"  {key}: {value}"
    comment = f"{comment}; {unset}" if unset else comment
    return f"{text:<{COMMENT_COLUMN - 2}}  # {comment}"


def starter_config(file_name: str = "experiment.yaml") -> str:
    """The starter file's text: every section with every key at its default, each with a one-line comment."""
    defaults = Config().to_dict()
    lines = [
        "# Experiment config: every key at its default; a key left out or commented out takes its default.",
        f"# Set data.path, then: yolo-pipeline train {file_name}  (or override any key there as section.key=value)",
    ]
    for section, field in Config.model_fields.items():
        model = field.annotation
        about = (model.__doc__ or "").strip().splitlines()
        lines.append(f"{section}:" + (f"  # {about[0]}" if about else ""))
        for key, info in model.model_fields.items():
            comment = _comment(info)
            lines.append(_line(key, defaults[section][key], comment, LEFT_UNSET.get((section, key), "")))
    return "\n".join(lines) + "\n"


def write_starter_config(path: str | Path) -> Path:
    """Write the starter config to a new file; an existing one is never replaced (one-line ConfigError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as file:  # "x": fails if anything is there, even from a race
            file.write(starter_config(str(path)))
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; init writes only a new file (name another one)") from None
    return path
