"""Read one image file as the 8-bit BGR array a detector takes, or say in a few words why not.

OpenCV decodes by content, not by name, and releases the GIL while it does, so a pool of threads
decodes in parallel. A decoder that gives up half-way may still return pixels (a truncated JPEG
comes back grey at the bottom), so the file's end marker is checked too. 16-bit and float images
are scaled by the bit depth their values use, as `data import` does for training data, so a model
sees line-scan images at inference as it saw them in training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.data.images import scale_to_8bit, structure_problem

_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


class ImageError(ValueError):
    """An image that cannot be predicted on; the message is the reason, for ``errors.jsonl``."""


def sniff(data: bytes) -> str:
    """The image format the bytes start with, or "" when they look like no image format."""
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), "")


def _truncation(data: bytes, kind: str) -> str:
    if problem := structure_problem(data, kind):  # the JPEG end marker, checked as data validation does
        return problem
    if kind == "PNG" and b"IEND" not in data.rstrip(b"\0")[-16:]:
        return "truncated PNG (no IEND chunk)"
    return ""


def read_image(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 BGR (H, W, 3); ImageError with the reason when it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror})") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    kind = sniff(data)
    if not kind:
        raise ImageError(f"not an image: the content is no image format (named {path.suffix or 'without extension'})")
    if problem := _truncation(data, kind):
        raise ImageError(problem)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError(f"{kind} data that cannot be decoded (corrupt or truncated)")
    return to_bgr8(image)


def long_side(path: Path) -> int:
    """The longer side (px) of the image at ``path`` from its header alone, or 0 when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return max(image.size)
    except Exception:  # noqa: BLE001 - a bad file is reported when it is predicted; here it only has no size
        return 0


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; 8/16-bit or float) as uint8 BGR (H, W, 3)."""
    if image.dtype.kind == "f" and image.size and float(np.nanmax(image)) <= 1.0:
        image = np.nan_to_num(image) * 255.0  # float images in 0..1
    if image.dtype != np.uint8:
        image = scale_to_8bit(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
