"""What an inference backend is: a way to run the network on a batch of letterboxed images.

A backend class says what it is before anything is loaded (its registry name, the label messages
give it, whether it is installed, whether it runs on the CPU only, how `--runtime auto` treats it),
and `load` makes one for a model on a device: the expensive step (an export, a session, a fuse).
A loaded backend runs a batch (`run`, also its call: a `Detector` calls it as it calls ultralytics'
``AutoBackend``) and returns the raw predictions that ultralytics' ``non_max_suppression`` takes,
and says what it runs (`describe`: name, device, precision, file). After a batch, `embeddings` gives its images'
pooled backbone features (`pipeline.inference.embedding`), where the network can: an export's ``embedding``
output is kept there, not returned with the predictions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pipeline.inference.embedding import split_embedding

if TYPE_CHECKING:
    import torch


class Network(Protocol):
    """What a `Detector` runs: a loaded `Backend`, or anything shaped as ultralytics' ``AutoBackend``."""

    device: torch.device
    fp16: bool  # inputs in half precision
    stride: int  # the letterbox pads to a multiple of it
    end2end: bool  # the output needs no NMS (ultralytics' end-to-end heads)

    def __call__(self, batch: torch.Tensor) -> Any: ...


@dataclass(frozen=True)
class LoadRequest:
    """What a backend is loaded from, and where and how it is to run."""

    network: Any  # the PyTorch network, loaded (ultralytics' DetectionModel)
    weights: Path  # its checkpoint file (what an export is made from)
    trained_size: int  # the size it was trained at (an export's nominal size: its shapes stay dynamic)
    device: torch.device
    half: bool  # half precision, where the backend can
    threads: int  # the CPU threads the network may use


@dataclass(frozen=True)
class BackendInfo:
    """A loaded backend, described: ``onnx on cpu, fp32, <cache>/onnx/1a2b...-640-ultralytics8.3.onnx``."""

    name: str  # the registry's name: what --runtime takes
    label: str  # as messages name it: "ONNX Runtime"
    device: str
    precision: str  # fp32, fp16, int8
    file: Path | None  # what it runs: the checkpoint, an export

    def __str__(self) -> str:
        return f"{self.name} on {self.device}, {self.precision}, {self.file or 'in memory'}"


class Backend(ABC):
    """One way to run the network. A subclass in its own module, and one entry in the registry
    (`pipeline.inference.backends.BACKENDS`), make a new ``--runtime``."""

    name: ClassVar[str]  # the registry's name: what --runtime takes, what the results and the cache record
    label: ClassVar[str]  # as messages name it
    cpu_only: ClassVar[bool] = False  # refused on a GPU
    races: ClassVar[bool] = False  # --runtime auto on a CPU times it against the other racers on the first batches
    race_margin: ClassVar[float] = 1.0  # the race keeps it only when it beats the others by this factor
    load_step: ClassVar[str] = ""  # what `load` does that may fail (an export): the run goes on in PyTorch, noted

    @classmethod
    def available(cls) -> bool:
        """Whether what it needs is installed (checked before `--runtime auto` races it)."""
        return True

    @classmethod
    @abstractmethod
    def load(cls, request: LoadRequest) -> Backend:
        """The network of ``request`` ready to run batches on its device."""

    @abstractmethod
    def run(self, batch: torch.Tensor) -> Any:
        """A batch (B, 3, h, w), scaled to [0, 1], on `device`, half when `fp16` -> the raw predictions for NMS."""

    def __call__(self, batch: torch.Tensor) -> Any:
        return self.run(batch)

    last_embeddings: Any = None  # what `run` kept of the last batch: the export's embedding output

    def embeddings(self) -> Any:
        """The pooled backbone features (B, D) of the batch `run` last ran (a tensor or an array; given once), or
        None where this network gives none (an export made without them)."""
        found, self.last_embeddings = self.last_embeddings, None
        return found

    device: torch.device
    fp16: bool
    stride: int
    end2end: bool
    file: Path | None  # the file it runs

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def describe(self) -> BackendInfo:
        return BackendInfo(self.name, self.label, str(self.device), self.precision, self.file)


class AutoBackendRunner(Backend):
    """A backend that runs the network through ultralytics' ``AutoBackend`` (its preprocessing of the
    output is the one ultralytics' predictor gets, so detections match ``YOLO.predict``)."""

    def __init__(self, auto: Any, file: Path | None) -> None:
        self.auto = auto  # the AutoBackend, in eval mode
        self.file = file

    def run(self, batch: torch.Tensor) -> Any:
        """The predictions; an export's ``embedding`` output kept for `embeddings` (``AutoBackend`` returns an
        export's outputs as a list in the file's order, which its session's output names give)."""
        names = getattr(self.auto, "output_names", None) or ()
        raw, self.last_embeddings = split_embedding(self.auto(batch), names)
        return raw

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.auto.device

    @property
    def fp16(self) -> bool:  # type: ignore[override]
        return bool(self.auto.fp16)

    @property
    def stride(self) -> int:  # type: ignore[override]
        return int(self.auto.stride)

    @property
    def end2end(self) -> bool:  # type: ignore[override]
        return self.auto.end2end
