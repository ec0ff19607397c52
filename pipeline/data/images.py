"""Look at image files without decoding them, and convert the ones a detector cannot read as they are.

`inspect_image` reads the header and checks the file's structure (PIL's ``verify``, the JPEG end
marker), which finds zero-byte, unreadable and truncated files at a fraction of a decode's cost, so
it can run before every training. Modes other than 8-bit grey or RGB get a conversion: 16-bit line-scan
images are scaled by the bit depth their values really use (12-bit data in a 16-bit container would
otherwise come out 16 times too dark), alpha is dropped, palettes are expanded.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = None  # line-scan images are legitimately huge

_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_CONVERSIONS = {
    "RGBA": "alpha channel dropped",
    "LA": "alpha channel dropped",
    "PA": "palette expanded, alpha dropped",
    "P": "palette expanded to RGB",
    "1": "1-bit image expanded to 8-bit grey",
    "CMYK": "CMYK converted to RGB",
}


@dataclass(frozen=True)
class ImageInfo:
    width: int = 0
    height: int = 0
    mode: str = ""
    digest: str = ""
    convert: str = ""  # what conversion the image needs ("" = none)
    problem: str = ""  # why the image cannot be used ("" = it can)


def _pil_open(data: bytes) -> Image.Image:
    """PIL's own ``Image.open``: ultralytics replaces it with one that, on a file PIL cannot identify, tries to
    install and import a HEIF plugin (and raises ImportError offline) instead of saying the file is unreadable."""
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) or Image.open
    return opener(io.BytesIO(data))


def structure_problem(data: bytes, image_format: str | None) -> str:
    """What the bytes of a file in ``image_format`` (PIL's name) lack at their end, if anything."""
    if image_format == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    return ""


def inspect_image(path: Path) -> ImageInfo:
    """Size, mode, SHA-1 and any problem of one image file, without decoding its pixels."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageInfo(problem=f"cannot read ({exc.strerror})")
    if not data:
        return ImageInfo(problem="zero-byte file")
    digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    try:
        with _pil_open(data) as image:
            mode, (width, height), image_format = image.mode, image.size, image.format
            image.verify()
    except UnidentifiedImageError:
        return ImageInfo(digest=digest, problem="unreadable (not an image PIL or OpenCV can decode)")
    except Exception as exc:  # noqa: BLE001 - a crafted file can raise anything in a decoder; it is one bad file
        reason = "truncated" if "truncated" in str(exc).lower() else f"unreadable ({str(exc)[:80]})"
        return ImageInfo(digest=digest, problem=reason)
    if problem := structure_problem(data, image_format):
        return ImageInfo(width, height, mode, digest, problem=problem)
    convert = ""
    if mode in _HIGH_BIT_MODES:
        convert = f"{mode} high-bit-depth image scaled to 8 bits by the depth its values use"
    elif mode in _CONVERSIONS:
        convert = _CONVERSIONS[mode]
    return ImageInfo(width, height, mode, digest, convert=convert)


def inspect_images(paths: list[Path], workers: int = 8) -> list[ImageInfo]:
    """`inspect_image` over many files; threads, because the work is file reads and hashing (GIL released)."""
    if len(paths) < 32:
        return [inspect_image(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(inspect_image, paths, chunksize=16))


def needs_copy(mode: str) -> bool:
    """Whether the training loader (OpenCV) would misread the file: high bit depths lose their scale there."""
    return mode in _HIGH_BIT_MODES


def to_8bit(path: Path) -> np.ndarray:
    """The image as 8-bit grey (H, W) or RGB (H, W, 3), high bit depths scaled by the bits they use."""
    with Image.open(path) as image:
        if image.mode in _HIGH_BIT_MODES:
            return scale_to_8bit(np.asarray(image))
        if image.mode in {"L", "RGB"}:
            return np.asarray(image)
        grey = image.mode in {"1", "LA"} or (image.mode in {"P", "PA"} and _grey_palette(image))
        return np.asarray(image.convert("L" if grey else "RGB"))


def scale_to_8bit(values: np.ndarray) -> np.ndarray:
    """High-bit-depth pixel values as uint8, scaled by the bits the values use (12-bit data: by 4095)."""
    values = values.astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    bits = max(8, math.ceil(math.log2(top + 1))) if top > 0 else 8
    scaled = np.clip(values, 0, None) * (255.0 / (2**bits - 1))
    return np.round(scaled).astype(np.uint8)


def _grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    triples = [palette[i : i + 3] for i in range(0, len(palette), 3)]
    return all(r == g == b for r, g, b in triples)


def save_8bit(path: Path, target: Path) -> None:
    """Write the converted image as PNG (lossless) to ``target``."""
    Image.fromarray(to_8bit(path)).save(target, format="PNG")
