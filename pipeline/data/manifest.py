"""Dataset manifests: ``datasets/<name>.yaml`` says what a dataset is and where it comes from.

A manifest names the dataset, its classes (in training order), the source format, where the data
is (a local path, or a public URL fetched when the path is missing and the machine is online), how
to split it, and its licence. Imported data lands beside it, in ``datasets/<name>/`` (git-ignored).
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from pipeline.config import first_error
from pipeline.data.dataset import DatasetError, load_yaml
from pipeline.data.split import check_ratios

Format = Literal["auto", "yolo", "coco", "voc"]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    classes: list[str] = Field(default_factory=list, description="class names in training order; empty: the source's")
    format: Format = "auto"
    path: str = Field("", description="the source data, relative to this file or absolute")
    url: str = Field("", description="a public archive to fetch when `path` is missing")
    splits: Literal["source"] | dict[str, float] = Field("source", description="'source', or fractions per split")
    seed: int = Field(0, ge=0, description="seed of the split")
    licence: str = ""
    description: str = ""

    @field_validator("splits")
    @classmethod
    def _fractions(cls, value: str | dict[str, float]) -> str | dict[str, float]:
        return check_ratios(value) if isinstance(value, dict) else value

    _file: Path = PrivateAttr(default=Path("datasets/manifest.yaml"))  # set by `load_manifest`

    @property
    def file(self) -> Path:
        return self._file

    @property
    def out_dir(self) -> Path:
        """Where the imported YOLO layout lives: ``datasets/<name>/`` beside the manifest."""
        return self.file.parent / self.name

    def source_path(self) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (self.file.parent / path).resolve()


def is_manifest(path: str | Path) -> bool:
    """A YAML file with a ``name`` and no ``train`` key is a manifest; a data.yaml has splits."""
    path = Path(path)
    if path.suffix not in {".yaml", ".yml"} or not path.is_file():
        return False
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return isinstance(spec, dict) and "name" in spec and "train" not in spec and "names" not in spec


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        raw = load_yaml(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such manifest") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: a manifest is a mapping with name, classes, format, path, ...")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise DatasetError(str(first_error(str(path), exc))) from None
    manifest._file = path.resolve()
    return manifest


def fetch(manifest: Manifest) -> Path:
    """The source data: the local path if it exists, else the archive at ``url`` downloaded and unpacked."""
    source = manifest.source_path()
    if manifest.path and source.exists():
        return source
    missing = f"path {source} does not exist" if manifest.path else "no path given"
    if not manifest.url:
        raise DatasetError(f"{manifest.file}: path: {missing} and there is no url to fetch it from")
    target = manifest.out_dir.with_name(f"{manifest.name}.download")
    if target.is_dir():
        return target
    try:
        with tempfile.TemporaryDirectory(dir=manifest.file.parent) as tmp:
            archive = Path(tmp) / Path(manifest.url.split("?")[0]).name
            urllib.request.urlretrieve(manifest.url, archive)  # noqa: S310 - a URL the manifest's author chose
            shutil.unpack_archive(archive, Path(tmp) / "unpacked")
            shutil.move(Path(tmp) / "unpacked", target)
    except (OSError, ValueError, shutil.ReadError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"{manifest.file}: url: cannot fetch {manifest.url} ({reason}); {missing}: give the data's folder as SRC"
        ) from None
    return target
