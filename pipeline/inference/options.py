"""How `predict` runs, as one typed model: the command's options, the Python API's keywords, the Ray actors' settings.

Everything but what it reads (the source), the model and where the results go. The CLI builds its
options from these fields (type, default, description as help), ``predict(source, model, out, **kw)``
checks its keywords into one, and the Ray engine hands it to its actors. A bad value stops with one
line naming it, before anything is loaded: ``--batch: must be >= 1, got 0``.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.inference.backends import runtime_choices
from pipeline.inference.errors import ModelError, ResultsError
from pipeline.inference.scale import OVERLAP
from pipeline.messages import UserError


class PredictOptions(BaseModel):
    """The settings of one prediction; the descriptions are the command's help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(16, ge=1, description="images per model call")
    conf: float = Field(
        0.25, ge=0, le=1, description="lowest score kept (lowered to the lowest threshold when that is below it)"
    )
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold")
    imgsz: int = Field(0, ge=0, description="inference size (default: the model's training size)")
    device: str = Field("auto", description="auto, cpu, 0, ...")
    half: bool | None = Field(None, description="half precision (default: on with CUDA)")
    workers: int = Field(0, ge=0, description="decoding threads (default: min(8, CPU cores)); with Ray: actors (1)")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="class -> score: an image fails when a detection of the class reaches it; 'default' for the "
        "other classes (default: conf)",
    )
    screen: str = Field(
        "",
        description="a screen.json (from calibrate) whose thresholds the verdicts use, in place of any stored with the "
        "model; --threshold still overrides one class",
    )
    review: str = Field(
        "",
        description="also write the uncertain images (a class's top score within --band of its threshold) into this "
        "folder as a Label Studio review queue",
    )
    band: float = Field(
        0.1,
        ge=0,
        le=1,
        description="--review: how far from its threshold a score is uncertain (0.1: at a "
        "threshold of 0.4, scores from 0.3 to 0.5)",
    )
    save_images: bool = Field(False, description="also write annotated images under OUT/annotated/")
    save_crops: bool = Field(False, description="also write each detection's crop under OUT/crops/")
    max_det: int = Field(300, ge=1, description="most detections per image")
    tile: int | None = Field(
        None,
        description="cut images larger than SIZE px into SIZE-px tiles (0: whole images; default: as the model was "
        "trained, tiles when it learned on data.tile's, else whole images)",
    )
    overlap: float | None = Field(
        None, description="overlap of neighbouring tiles, as a fraction (default: the training tiles', else 0.2)"
    )
    track: bool = Field(False, description="log the summary to MLflow (--tracking-uri), tagged with the model's run")
    experiment: str = Field("predictions", description="MLflow experiment for --track")
    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: threads in this process; ray: Ray actors ($RAY_ADDRESS, else a local Ray), same files",
    )
    tracking_uri: str = Field("", description="MLflow server for runs:/ and models:/ URIs")
    runtime: str = Field(  # one of `runtime_choices`: auto, or a backend's name (`choices`)
        "auto",
        description="what runs the network (auto: on a CPU the faster of ONNX Runtime and PyTorch for this model, size "
        "and batch, timed once and cached; PyTorch on a GPU)",
    )
    progress: bool = Field(True, description="progress bar")

    @field_validator("device", mode="before")
    @classmethod
    def _index_is_a_device(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # device=0

    @field_validator("runtime", mode="before")
    @classmethod
    def _a_known_runtime(cls, value: Any) -> Any:
        """auto or a registered backend's name: read from the registry when checked, not fixed at import."""
        if not isinstance(value, str) or value not in runtime_choices():
            raise PydanticCustomError("literal_error", "Input should be one of the runtimes")
        return value

    @field_validator("thresholds", mode="before")
    @classmethod
    def _none_is_no_thresholds(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _tile_and_overlap(self) -> PredictOptions:
        overlap = OVERLAP if self.overlap is None else self.overlap
        if self.tile and not (self.tile >= 32 and 0 <= overlap < 1):
            raise ValueError(
                f"tile {self.tile}, overlap {overlap}: the tile must be >= 32 px and the overlap in [0, 1)"
            )
        return self

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The values a field takes when they are a fixed few (the CLI's choices): a Literal's; the runtime's,
        from the backends' registry (`pipeline.inference.backends`); none for the other fields."""
        if name == "runtime":
            return runtime_choices()
        kind = cls.model_fields[name].annotation
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()

    @classmethod
    def checked(cls, **values: Any) -> PredictOptions:
        """The options of these keywords, or the one-line error naming the first bad one."""
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:  # a typo, as a function's unknown keyword
            raise TypeError(f"predict() got an unexpected keyword argument {unknown[0]!r}")
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _one_line(exc.errors()[0]) from None


def _one_line(error: dict[str, Any]) -> UserError:
    """A pydantic error as the line `predict` gives: ``--conf: must be between 0 and 1, got 1.5``."""
    if not error["loc"]:  # the tile rule, which words its own message
        return ResultsError(error["msg"].removeprefix("Value error, "))
    name, got = str(error["loc"][0]), error["input"]
    field = PredictOptions.model_fields[name]
    if error["type"] in {"greater_than_equal", "less_than_equal"}:
        low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
        high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        return ResultsError(f"--{name.replace('_', '-')}: must be {bound}, got {got}")
    if error["type"] == "literal_error":
        *first, last = PredictOptions.choices(name)
        error_class = ModelError if name == "runtime" else ResultsError  # the classes these errors always had
        return error_class(f"{name}: must be {', '.join(first)} or {last}, got {got!r}")
    message = error["msg"]
    return ResultsError(f"{name}: {message[0].lower()}{message[1:]}, got {got!r}")
