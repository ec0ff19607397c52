"""How a model runs over images, as typed models: the commands' options, the Python API's keywords, the Ray actors'.

`RunOptions`: what every command that runs a model over a split or a folder shares (image size, batch,
conf, iou, device, tracking URI), at the defaults of a split's evaluation; ``evaluate``, ``calibrate`` and
``calibrate --check`` take it (each the fields it uses). `PredictOptions` is it with `predict`'s own
default conf and everything else a prediction takes but what it reads (the source), the model and where
the results go. The CLI builds each command's options from these fields (type, default, description as
help), the Python API's functions check their keywords into one (``predict(source, model, out, **kw)``,
``evaluate(model, data, **kw)``), and the Ray engine hands predict's to its actors. A bad value stops
with one line naming it, before anything is loaded: ``--batch: must be >= 1, got 0``.
"""

from __future__ import annotations

import typing
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from pipeline.inference.backends import runtime_choices
from pipeline.inference.errors import ModelError, ResultsError
from pipeline.inference.scale import OVERLAP
from pipeline.messages import UserError


class RunOptions(BaseModel):
    """How a model runs over a split or a folder of images; the descriptions are the commands' help. The defaults
    are a split's evaluation's: every detection down to conf 0.001, as any AP (and a calibration) wants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(16, ge=1, description="images per model call")
    conf: float = Field(0.001, ge=0, le=1, description="lowest score kept (low, as for any AP)")
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold")
    imgsz: int = Field(0, ge=0, description="image size (default: the model's training size)")
    device: str = Field("auto", description="auto, cpu, 0, ...")
    tracking_uri: str = Field("", description="MLflow server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")

    @field_validator("device", mode="before")
    @classmethod
    def _index_is_a_device(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # device=0

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The values a field takes when they are a fixed few (the CLI's choices): a Literal's; none for the others."""
        kind = cls.model_fields[name].annotation
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()

    @classmethod
    def checked(cls, **values: Any) -> Self:
        """The options of these keywords, or the one-line error naming the first bad one."""
        return cls.given(None, values, cls.__name__)

    @classmethod
    def given(
        cls, options: RunOptions | None, values: dict[str, Any], command: str, fields: Collection[str] = ()
    ) -> Self:
        """What a public function runs with: ``options`` with ``values`` (its keywords) laid over them, checked.

        ``command`` names the function in the error of a keyword it does not take (a typo, or a field outside
        ``fields``: those of this model it accepts as keywords, default all)."""
        unknown = sorted(set(values) - set(fields or cls.model_fields))
        if unknown:  # a typo, as a function's unknown keyword
            raise TypeError(f"{command}() got an unexpected keyword argument {unknown[0]!r}")
        if isinstance(options, cls) and not values:
            return options
        try:
            return cls(**{**(options.model_dump(include=set(cls.model_fields)) if options else {}), **values})
        except ValidationError as exc:
            raise _one_line(cls, exc.errors()[0]) from None


class PredictOptions(RunOptions):
    """The settings of one prediction; the descriptions are the command's help."""

    conf: float = Field(
        0.25, ge=0, le=1, description="lowest score kept (lowered to the lowest threshold when that is below it)"
    )
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
    runtime: str = Field(  # one of `runtime_choices`: auto, or a backend's name (`choices`)
        "auto",
        description="what runs the network (auto: on a CPU the faster of ONNX Runtime and PyTorch for this model, size "
        "and batch, timed once and cached; PyTorch on a GPU)",
    )
    progress: bool = Field(True, description="progress bar")
    watch: bool = Field(
        False,
        description="keep running: screen the source folder's images, then each one that appears, once it is "
        "written whole, until SIGINT or SIGTERM",
    )
    move_done: str = Field("", description="--watch: move each screened image into this folder after its record")
    drift: bool = Field(
        True,
        description="drift check: compare the images with the baseline of the screen (drift.json), keep what the run "
        "saw (drift_sample.npz)",
    )
    drift_window: int = Field(200, ge=20, description="--watch: images per drift check of the line")

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

    @model_validator(mode="after")
    def _watch_alone(self) -> PredictOptions:
        if self.move_done and not self.watch:
            raise ValueError("--move-done: only with --watch (a folder the line fills)")
        if self.watch and self.engine != "local":
            raise ValueError("--watch: runs in this process (--engine local), not in Ray actors")
        return self

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """As `RunOptions.choices`; the runtime's from the backends' registry (`pipeline.inference.backends`)."""
        return runtime_choices() if name == "runtime" else super().choices(name)


def _one_line(options: type[RunOptions], error: dict[str, Any]) -> UserError:
    """A pydantic error as the line the commands give: ``--conf: must be between 0 and 1, got 1.5``."""
    if not error["loc"]:  # the tile and watch rules, which word their own messages
        return ResultsError(error["msg"].removeprefix("Value error, "))
    name, got = str(error["loc"][0]), error["input"]
    field = options.model_fields[name]
    if error["type"] in {"greater_than_equal", "less_than_equal"}:
        low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
        high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        return ResultsError(f"--{name.replace('_', '-')}: must be {bound}, got {got}")
    if error["type"] == "literal_error":
        *first, last = options.choices(name)
        error_class = ModelError if name == "runtime" else ResultsError  # the classes these errors always had
        return error_class(f"{name}: must be {', '.join(first)} or {last}, got {got!r}")
    message = error["msg"]
    return ResultsError(f"{name}: {message[0].lower()}{message[1:]}, got {got!r}")
