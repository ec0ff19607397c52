"""The albumentations pipeline a config declares (its preset's transforms, then its own): building, checking, serialising.

The transforms run inside ultralytics' training transforms in place of its default albumentations
block (after mosaic and the random affine, before HSV and flips), bbox-aware in YOLO format. They
travel to ultralytics as ``A.to_dict`` dicts in its ``augmentations`` argument, which it stores in
every checkpoint and passes to multi-GPU workers, so a resume or a relaunch runs the same pipeline.
Every transform is built and tried on a tiny image when the config is checked, so a misspelt name or
parameter stops the run before training with one line naming the config field.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from pipeline.augment.presets import PRESETS
from pipeline.config import AugmentConfig, ConfigError, TransformSpec


def transform_specs(augment: AugmentConfig) -> list[tuple[str, TransformSpec]]:
    """The preset's transforms then the config's own, each with the config field it came from (the config
    validates the preset's name)."""
    specs = [
        (f"augment.preset ({augment.preset}) transform {i + 1}", TransformSpec.model_validate(raw))
        for i, raw in enumerate(PRESETS[augment.preset].albumentations)
    ]
    return specs + [(f"augment.albumentations[{i}]", spec) for i, spec in enumerate(augment.albumentations)]


def _transform_class(field: str, name: str) -> type:
    from pipeline.augment import fast_transforms

    A = fast_transforms.A  # albumentations, imported without its version check over the network

    # Our OpenCV versions stand in for albumentations' classes of the same name (same results).
    cls = fast_transforms.TRANSFORMS.get(name) or getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        raise ConfigError(f"{field}: transform: {name!r} is not an albumentations transform")
    if issubclass(cls, A.DualTransform) and not _supports_bboxes(cls):
        raise ConfigError(f"{field}: transform: {name} cannot move bounding boxes, so it cannot train a detector")
    return cls


def _supports_bboxes(cls: type) -> bool:
    from albumentations.core.type_definitions import Targets

    targets = getattr(cls, "_targets", ())
    targets = targets if isinstance(targets, tuple) else (targets,)
    return Targets.BBOXES in targets


def _build_one(field: str, spec: TransformSpec) -> Any:
    cls = _transform_class(field, spec.transform)
    params = spec.params()
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(f"{field}: {spec.transform}: unknown parameter {unknown[0]!r}")
    try:
        return cls(p=spec.p, **params)
    except ValidationError as exc:  # albumentations checks its parameters with pydantic
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{field}: {spec.transform}: {name}: {reason}") from None
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        # albumentations re-raises its pydantic errors as text: "... for InitSchema std_range Value error, ... [type=..."
        if match := re.search(r"for InitSchema (\S+) (?:Value error, )?(.*?) \[type=", text):
            text = f"{match[1]}: {match[2]}"
        raise ConfigError(f"{field}: {spec.transform}: {text[:200]}") from None


def build_transforms(augment: AugmentConfig) -> list[Any]:
    """The albumentations transform objects, in order; each checked on a tiny image with a box."""
    specs = transform_specs(augment)
    transforms = [_build_one(field, spec) for field, spec in specs]
    for (field, spec), transform in zip(specs, transforms):
        _try(field, spec.transform, transform)
    return transforms


def _try(field: str, name: str, transform: Any) -> None:
    from pipeline.augment.fast_transforms import A  # albumentations, without its version check

    image = np.full((64, 64, 3), 128, np.uint8)
    saved_p = transform.p
    transform.p = 1.0  # make sure it really runs once
    try:
        if isinstance(transform, A.DualTransform):
            probe = A.Compose([transform], bbox_params=A.BboxParams(format="yolo", label_fields=["class_labels"]))
            probe(image=image, bboxes=np.array([[0.5, 0.5, 0.25, 0.25]]), class_labels=np.array([0]))
        else:
            A.Compose([transform])(image=image)
    except Exception as exc:  # noqa: BLE001 - whatever it is, training would fail the same way later
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{field}: {name}: fails on a test image ({type(exc).__name__}: {reason})") from None
    finally:
        transform.p = saved_p


def serialize(augment: AugmentConfig) -> list[dict[str, Any]]:
    """The pipeline as ultralytics' ``augmentations`` argument: ``A.to_dict`` per transform (empty: none at all)."""
    from pipeline.augment.fast_transforms import A  # albumentations, without its version check

    return [A.to_dict(t) for t in build_transforms(augment)]


def compose(augment: AugmentConfig) -> Any:
    """The pipeline as one bbox-aware ``A.Compose`` over YOLO boxes (``class_labels`` beside them)."""
    from pipeline.augment.fast_transforms import A  # albumentations, without its version check

    return A.Compose(build_transforms(augment), bbox_params=A.BboxParams(format="yolo", label_fields=["class_labels"]))


def describe(augment: AugmentConfig) -> list[dict[str, Any]]:
    """The resolved pipeline as plain dicts (transform, p, parameters), for logging and people."""
    return [{"transform": spec.transform, "p": spec.p, **spec.params()} for _, spec in transform_specs(augment)]


def write_augment_spec(augment: AugmentConfig, serialized: list[dict[str, Any]], path: Path) -> Path:
    """The pipeline as declared (preset expanded) and as albumentations serialises it, for people and MLflow."""
    import yaml

    spec = {
        "preset": augment.preset,
        "symmetry": augment.symmetry,
        "transforms": describe(augment),
        "albumentations": serialized,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
