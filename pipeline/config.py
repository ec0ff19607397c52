"""Experiment configuration: typed sections, YAML loading, ``section.key=value`` overrides.

Every key has a default, so a config file can be a few lines; a text key left blank (``uri:``) is
unset, as ``""`` is, where that is its default. Anything wrong (an unknown key, a wrong
type, a value out of range) stops with one line naming the file and the field, e.g.
``configs/x.yaml: train.epochs: must be > 0, got -3``.
"""

from __future__ import annotations

import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.augment.presets import PRESETS, with_preset_defaults
from pipeline.credentials import strip_credentials
from pipeline.messages import UserError
from pipeline.yaml_load import read_yaml

LOG = logging.getLogger("pipeline.config")


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message is one line naming the file and the field."""


def _types_in(annotation: Any) -> set[Any]:
    """The plain types an annotation admits: ``int | list[int] | None`` -> {int, list, NoneType}."""
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        return set().union(*(_types_in(arg) for arg in typing.get_args(annotation)))
    return {typing.get_origin(annotation) or annotation}


def no_bool_for_number(value: Any, annotation: Any) -> Any:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read ``epochs: true`` as 1)."""
    admits = _types_in(annotation)
    if isinstance(value, bool) and bool not in admits and admits & {int, float}:
        raise ValueError(f"must be a number, got {str(value).lower()}")
    if isinstance(value, list) and list in admits and any(isinstance(v, bool) for v in value):
        raise ValueError(f"must be numbers, got {yaml.safe_dump(value, default_flow_style=True).strip()}")
    return value


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default); assignments are checked too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_bools(cls, value: Any, info: ValidationInfo) -> Any:
        return no_bool_for_number(value, cls.model_fields[info.field_name].annotation)

    @field_validator("*", mode="before")
    @classmethod
    def _null_text_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # `uri:` with nothing after it reads as null; where the default is "" (not set), null means the same.
        return "" if value is None and cls.model_fields[info.field_name].default == "" else value


class TileConfig(_Section):
    """Training on tiles cut from the images at their native resolution (`pipeline.data.tiles`)."""

    size: int = Field(
        640,
        ge=32,
        description="tile side in pixels: images larger than this are cut into overlapping tiles of it at their "
        "native resolution, smaller ones are used whole",
    )
    overlap: float = Field(
        0.2, ge=0, lt=1, description="overlap of neighbouring tiles, as a fraction of the tile (as predict's --overlap)"
    )
    min_visible: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a box is kept in a tile (clipped to it) when at least this share of its area is inside; a "
        "smaller part is handled as cut_boxes says, so it never teaches that a defect is background",
    )
    cut_boxes: Literal["mask", "ignore"] = Field(
        "mask",
        description="what becomes of a box's part cut below min_visible: mask (filled with the tile's mean colour) or "
        "ignore (pixels kept, the loss does not count it as background); scripts/benchmarks/cut_boxes.py "
        "measures which trains better",
    )
    backgrounds: float = Field(
        0.1,
        ge=0,
        le=1,
        description="of the tiles cut from an image, the defect-free ones are kept, drawn with a fixed seed, until "
        "they make up this share of the split's cut tiles (0: none, 1: all); images used whole are all kept",
    )


class DataConfig(_Section):
    path: str = Field("", description="a dataset manifest, a data.yaml, or a folder in YOLO layout")
    name: str = Field("", description="dataset name for tags and lineage; default: the manifest's or folder's name")
    policy: Literal["skip", "fail"] = Field(
        "skip", description="bad images, boxes or lines: skip them and report (skip), or stop the run (fail)"
    )
    tile: TileConfig | None = Field(
        None,
        description="train on tiles cut at the native resolution, e.g. {size: 640, overlap: 0.2, min_visible: 0.5, "
        "backgrounds: 0.1} (made once per dataset and settings, cached); validation stays on whole images; "
        "null: whole images",
    )


class ModelConfig(_Section):
    weights: str = Field(
        "yolo11n.yaml",
        description="a .pt path or ultralytics name, an architecture .yaml, or an MLflow model to fine-tune "
        "(models:/name@alias, models:/name/<version>, runs:/<run id>/model; found at tracking.uri)",
    )
    freeze: int | list[int] | None = Field(None, description="freeze the first N layers, or these layer indices")

    @field_validator("freeze")
    @classmethod
    def _freeze_non_negative(cls, value: int | list[int] | None) -> int | list[int] | None:
        values = value if isinstance(value, list) else [value] if value is not None else []
        if any(v < 0 for v in values):
            raise ValueError(f"must be >= 0, got {value}")
        return value


class TrainConfig(_Section):
    epochs: int = Field(10, gt=0, description="passes over the training images")
    imgsz: int = Field(640, ge=32, description="training image size in pixels (a multiple of 32)")
    batch: int = Field(16, ge=1, description="images per batch (ultralytics accumulates to 64 per optimizer step)")
    device: str = Field("auto", description="auto, cpu, 0, 0,1, ...")
    seed: int = Field(0, ge=0, description="random seed of the data order, augmentation and initial weights")
    workers: int = Field(8, ge=0, description="data-loading processes on a GPU (ultralytics uses none on the CPU)")
    threads: int = Field(
        0, ge=0, description="PyTorch threads of a CPU training; 0: the cores other processes leave free"
    )
    patience: int = Field(100, ge=0, description="epochs without improvement before stopping; 0 = never")
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD"] = Field(
        "auto", description="auto: ultralytics picks the optimizer and its learning rate from the training's size"
    )
    lr0: float = Field(0.01, gt=0, le=1, description="initial learning rate (ignored when optimizer is auto)")
    lrf: float = Field(0.01, gt=0, le=1, description="final learning rate as a fraction of lr0")
    cos_lr: bool = Field(False, description="cosine learning-rate decay instead of linear")
    warmup_epochs: float = Field(3.0, ge=0, description="epochs of learning-rate and momentum warmup")
    weight_decay: float = Field(0.0005, ge=0, description="L2 penalty on the weights")
    amp: bool = Field(True, description="mixed precision on CUDA (always off on CPU)")
    cache: bool = Field(False, description="cache decoded images in memory")
    project: str = Field("runs/train", description="folder that holds one sub-folder per training")
    name: str = Field("", description="sub-folder name; default: the run name, else the experiment")
    exist_ok: bool = Field(False, description="reuse the sub-folder instead of making name-2, name-3, ...")
    plots: bool = Field(True, description="ultralytics' training plots (curves, confusion matrix, batches)")
    deterministic: bool = Field(True, description="deterministic algorithms: same seed, same result (a little slower)")
    drift_baseline: bool = Field(
        True,
        description="at the end, predict the val split with best.pt and keep what it saw as weights/drift_baseline.npz "
        "(and in the run): predict checks drift against it before any calibration",
    )

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _known_device(cls, value: object) -> str:
        value = str(value).strip().lower()
        if value in {"auto", "cpu", "mps"} or all(part.strip().isdigit() for part in value.split(",")):
            return value
        raise ValueError(f"must be auto, cpu, mps or GPU indices like 0 or 0,1, got {value!r}")


class TransformSpec(BaseModel):
    """One albumentations transform: its class name, its probability, and any of its parameters."""

    model_config = ConfigDict(extra="allow")  # the transform's own parameters, checked when it is built

    transform: str = Field(min_length=1, description="albumentations class name, e.g. RandomBrightnessContrast")
    p: float = Field(0.5, ge=0, le=1)

    @field_validator("p", mode="before")
    @classmethod
    def _p_is_not_a_bool(cls, value: Any) -> Any:
        return no_bool_for_number(value, float)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentConfig(_Section):
    """Ultralytics' own augmentation hyperparameters (mosaic and friends) and the albumentations pipeline."""

    mosaic: float = Field(1.0, ge=0, le=1, description="probability of a 4-image mosaic")
    close_mosaic: int = Field(2, ge=0, description="turn mosaic off for the last N epochs")
    mixup: float = Field(0.0, ge=0, le=1, description="probability of blending two images")
    fliplr: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    flipud: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")
    degrees: float = Field(0.0, ge=0, le=180, description="random rotation up to this many degrees")
    translate: float = Field(0.1, ge=0, le=1, description="random shift up to this fraction of the image")
    scale: float = Field(0.5, ge=0, description="random zoom by up to this fraction")
    hsv_h: float = Field(0.015, ge=0, le=1, description="random hue shift (fraction)")
    hsv_s: float = Field(0.7, ge=0, le=1, description="random saturation change (fraction)")
    hsv_v: float = Field(0.4, ge=0, le=1, description="random brightness change (fraction)")
    symmetry: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of one of the square's 8 flips and quarter turns, uniformly (1: all equal)",
    )
    preset: str = Field(
        "none",
        description="none, surface, surface-light, ultralytics: albumentations transforms and defaults for the keys above"
        " (see pipeline/augment/presets.py)",
    )
    albumentations: list[TransformSpec] = Field(
        default_factory=list, description="transforms run after the preset's, in order, replacing ultralytics' block"
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, raw: Any) -> Any:
        return with_preset_defaults(raw) if isinstance(raw, dict) else raw

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"must be one of {', '.join(PRESETS)}, got {value!r}")
        return value

    def ultralytics_hyp(self) -> dict[str, Any]:
        """The keys ultralytics itself takes (the albumentations pipeline travels separately; symmetry is ours)."""
        return self.model_dump(exclude={"preset", "albumentations", "symmetry"})


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="record the training in MLflow")
    uri: str = Field("", description="MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else a local SQLite file")
    experiment: str = Field("yolo-pipeline", description="the MLflow experiment the run goes into")
    run_name: str = Field("", description="the MLflow run's name (default: the training folder's name)")
    tags: dict[str, str] = Field(
        default_factory=dict, description="extra tags on the run (a sweep names its parent here)"
    )
    log_model: bool = Field(True, description="log the best weights as an MLflow model")
    system_metrics: bool = Field(True, description="CPU, memory and GPU use via MLflow's system metrics")
    system_metrics_interval_s: float = Field(10.0, gt=0, description="seconds between system-metric samples")
    flush_interval_s: float = Field(2.0, gt=0, description="how often the background worker sends a batch")
    retry_interval_s: float = Field(15.0, gt=0, description="how often to retry an unreachable server")
    request_timeout_s: int = Field(10, ge=1, description="timeout of one request to the server, in seconds")
    finish_timeout_s: float = Field(
        30.0, ge=0, description="how long the end of a training waits for the server to acknowledge a record"
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials_kept(cls, value: str) -> str:
        # user:password in the URI would be saved in config.yaml, session.json, the run's params and the spool:
        # they move to MLflow's credential variables of this process, and the config keeps the bare URI.
        return strip_credentials(value)


RETIRED_GRADIENT_KEYS = ("vanish_abs", "vanish_rel", "vanish_epochs", "explode_norm")


class GradientsConfig(_Section):
    enabled: bool = Field(True, description="record per-layer gradient statistics in the optimizer step")
    every: int = Field(1, ge=1, description="sample every N optimizer steps of an epoch, starting with its first")
    detail: Literal["block", "layer"] = Field(
        "block",
        description="what MLflow gets per epoch: block (gradient norm and update ratio per block and head level) "
        "or layer (every statistic of every group); gradients/table.parquet always holds every group",
    )
    grouping: Literal["parameter", "layer", "block"] = Field(
        "layer",
        description="the rows of gradients/table.parquet and of detail: layer: parameter (each tensor), "
        "layer (the module owning it: model.2.cv1.conv), block (model.2)",
    )
    reductions: list[Literal["mean", "max", "last"]] = Field(
        ["mean", "max", "last"], min_length=1, description="how an epoch's samples are reduced before logging"
    )
    stop_on_nonfinite: bool = Field(False, description="stop training at the first epoch with non-finite gradients")
    heatmaps: bool = Field(True, description="draw the layers x epochs heatmaps each epoch")

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, raw: Any) -> Any:
        """Fixed thresholds the gradient doctor replaced (it judges a run against itself): said once, then ignored,
        so older configs and the sessions of trainings to resume still load."""
        if isinstance(raw, dict) and (retired := [key for key in RETIRED_GRADIENT_KEYS if key in raw]):
            LOG.warning("config: gradients.%s: no longer used (the gradient doctor needs no thresholds)", retired[0])
            raw = {key: value for key, value in raw.items() if key not in RETIRED_GRADIENT_KEYS}
        return raw


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    gradients: GradientsConfig = GradientsConfig()
    tracking: TrackingConfig = TrackingConfig()
    _source: str = PrivateAttr("<config>")  # the file it was read from, for messages

    @property
    def source(self) -> str:
        return self._source

    def __eq__(self, other: object) -> bool:
        # Two configs with the same keys are equal wherever they were read from.
        return isinstance(other, Config) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment] - mutable, as pydantic models are

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Every key as ``section.key`` -> value (the form MLflow params take); the run's tags are tags, not params."""
        return {
            f"{section}.{key}": value
            for section, keys in self.to_dict().items()
            for key, value in keys.items()
            if (section, key) != ("tracking", "tags")
        }


def warn_ineffective_settings(config: Config, device: str) -> None:
    """One warning line for each setting that would silently do nothing in this training (``device`` resolved)."""
    # Only a workers count the user chose: the default suits a GPU and is no news on a CPU.
    if "workers" in config.train.model_fields_set and config.train.workers > 0 and device in {"cpu", "mps"}:
        # ultralytics' trainer sets workers to 0 on cpu and mps (engine/trainer.py), whatever the config says.
        LOG.warning(
            "config: train.workers: %d does nothing on %s: ultralytics loads the data in the training process "
            "there (0 workers)",
            config.train.workers,
            "the CPU" if device == "cpu" else "MPS",
        )
    augment = config.augment
    if augment.mosaic > 0 and augment.close_mosaic >= config.train.epochs:
        # ultralytics turns mosaic off once epoch >= epochs - close_mosaic, so here from the first epoch on.
        LOG.warning(
            "config: augment.close_mosaic: %d >= train.epochs (%d), so no epoch uses mosaic "
            "(augment.mosaic: %s does nothing); set close_mosaic below epochs, or mosaic: 0",
            augment.close_mosaic,
            config.train.epochs,
            augment.mosaic,
        )


def class_values(pairs: list[str], option: str, example: str) -> dict[str, float]:
    """``CLASS=NUMBER`` options (``--threshold scratch=0.4``, ``--recall pit=0.9``) as a dict; one line for a bad one."""
    values: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.rpartition("=")
        try:
            values[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise ConfigError(f"{option} {pair!r}: expected {example}")
    return values


def warn_fine_tuning_rate(config: Config) -> None:
    """One warning line when a training that starts from trained weights would take steps that erase them."""
    train, weights = config.train, config.model.weights.strip()
    if train.optimizer in {"Adam", "AdamW"} and train.lr0 >= 0.001 and train.warmup_epochs == 0:
        # Adam's first steps move every weight by about lr0 whatever its gradient: measured, one epoch at
        # 0.002 took a model from mAP50 0.25 to 0.004, where 0.0002 kept it (0.26).
        LOG.warning(
            "config: train.lr0: %g with %s and no warmup starts a fine-tuning with steps large enough to erase "
            "what %s learned; use about a tenth (lr0 %g) or warmup_epochs > 0",
            train.lr0,
            train.optimizer,
            weights,
            train.lr0 / 10,
        )


def _describe(error: dict[str, Any]) -> str:
    """One pydantic error as a short phrase: 'must be > 0, got -3'."""
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}, got {got!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return f"must be an integer, got {got!r}"
    if kind in {"float_parsing", "float_type"}:
        return f"must be a number, got {got!r}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"must be true or false, got {got!r}"
    if kind in {"string_type"}:
        return f"must be a string, got {got!r}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"must be a mapping of keys, got {got!r}"
    message = error["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:]


def first_error(source: str, exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{source}: {field}: {_describe(error)}{more}")


def option_error(exc: ValidationError) -> ConfigError:
    """A section's fields given as command-line options, their first bad value as one line naming the option:
    ``--min-visible: must be > 0, got 0.0``."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "value"
    return ConfigError(f"--{name.replace('_', '-')}: {_describe(error)}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=5`` -> (['train', 'epochs'], 5); the value is read as YAML, so types come out right."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``raw`` with each ``section.key=value`` set (sections are created as needed)."""
    merged = {section: dict(keys) if isinstance(keys, dict) else keys for section, keys in raw.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {text!r}: {section} is not a section")
        target[key] = value
    return merged


def build_config(raw: dict[str, Any] | None, source: str = "<config>", overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping (plus overrides) into a Config, or raise a one-line ConfigError."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    # A section whose keys are all commented out reads as None: it means "all defaults".
    raw = {section: {} if keys is None else keys for section, keys in raw.items()}
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} (with overrides)"
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise first_error(source, exc) from None
    config._source = source
    return config


def load_raw(path: str | Path) -> dict[str, Any] | None:
    """An experiment YAML as written (no defaults, no validation), or a one-line ConfigError."""
    return read_yaml(path, ConfigError, "config file")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load an experiment YAML (or only defaults when ``path`` is None) and apply overrides."""
    if path is None:
        return build_config({}, "<defaults>", overrides)
    return build_config(load_raw(path), str(path), overrides)


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (the file `load_config` reads back to the same Config)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return path
