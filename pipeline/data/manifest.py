"""Dataset manifests: ``datasets/<name>.yaml`` says what a dataset is and where it comes from.

A manifest names the dataset, its classes (in training order), the source format, where the data
is (a local path, or a public URL fetched when the path is missing and the machine is online), how
to split it, and its licence. Imported data lands beside it, in ``datasets/<name>/`` (git-ignored).

A fetched archive is checked against the manifest's ``sha256`` (when given), unpacked member by
member inside its folder only, and recorded (marker with url and sha256) only once fully unpacked, in
``datasets/<name>.download/data/``; a folder there without that record is never reused.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from pipeline.config import first_error
from pipeline.data.dataset import DatasetError, load_yaml
from pipeline.data.formats import CHOICES
from pipeline.data.split import check_ratios
from pipeline.destinations import MARKER, NAME_PATTERN, build_then_swap, marker_of

DOWNLOAD = "download"  # the marker's kind of a fetched archive's folder

Format = Literal[CHOICES]  # the one list of formats (pipeline.data.formats)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    classes: list[str] = Field(default_factory=list, description="class names in training order; empty: the source's")
    format: Format = "auto"
    path: str = Field("", description="the source data, relative to this file or absolute")
    url: str = Field("", description="a public archive to fetch when `path` is missing")
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$", description="the archive's SHA-256, checked on download")
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
    done = marker_of(target)
    if done and done.get("kind") == DOWNLOAD and done.get("url") == manifest.url:
        if manifest.sha256.lower() in ("", done.get("sha256")):
            return target / "data"
    elif target.exists() and done is None and any(target.iterdir()):
        raise DatasetError(
            f"{target}: an unfinished download (no {MARKER}); remove that folder yourself and run the import again"
        )
    with tempfile.TemporaryDirectory(prefix=f".{manifest.name}.archive-", dir=manifest.file.parent) as tmp:
        archive = _download(manifest, Path(tmp), missing)
        digest = _sha256(archive)
        if manifest.sha256 and digest != manifest.sha256.lower():
            raise DatasetError(
                f"{manifest.file}: sha256: the archive from {manifest.url} has sha256 {digest}, not "
                f"{manifest.sha256}; nothing unpacked"
            )
        # Recorded (the marker) only after the whole archive is unpacked: a half-unpacked one is never reused.
        with build_then_swap(target, DOWNLOAD, "download folder", url=manifest.url, sha256=digest) as staging:
            _unpack(archive, staging / "data", manifest)
    return target / "data"


def download_sha256(source: Path) -> str:
    """The SHA-256 recorded for ``source`` when `fetch` downloaded it, else ''."""
    done = marker_of(source.parent)
    return str(done.get("sha256", "")) if done and done.get("kind") == DOWNLOAD else ""


def _download(manifest: Manifest, folder: Path, missing: str) -> Path:
    archive = folder / (Path(manifest.url.split("?")[0]).name or "archive")
    try:
        urllib.request.urlretrieve(manifest.url, archive)  # noqa: S310 - a URL the manifest's author chose
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"{manifest.file}: url: cannot fetch {manifest.url} ({reason}); {missing}: give the data's folder as SRC"
        ) from None
    return archive


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(name: str) -> bool:
    """A member name that stays inside the folder it is unpacked into: relative, no ``..``, no drive."""
    posix = name.replace("\\", "/")
    return not posix.startswith("/") and ".." not in PurePosixPath(posix).parts and not PureWindowsPath(name).drive


def _unpack(archive: Path, folder: Path, manifest: Manifest) -> None:
    """Unpack a tar or zip archive into ``folder``; a member that would land outside it refuses the whole archive."""
    where = f"{manifest.file}: url: {manifest.url}"
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_members(tar.getnames(), where)
                tar.extractall(folder, filter="data")  # also refuses links leading outside, device files
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                _check_members(zipped.namelist(), where)
                zipped.extractall(folder)
        else:
            raise DatasetError(f"{where}: not a tar or zip archive; nothing unpacked")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{where}: cannot unpack ({exc}); nothing kept") from None


def _check_members(names: list[str], where: str) -> None:
    for name in names:
        if not _inside(name):
            raise DatasetError(f"{where}: archive member {name!r} points outside its folder; nothing unpacked")
