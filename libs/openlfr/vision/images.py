"""Decoding and checking images at the boundary, so bad input gets a clear error, not a crash."""

from __future__ import annotations

import logging
import warnings
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from openlfr.vision.exceptions import ImageError

logger = logging.getLogger(__name__)

#: Larger images are refused before decoding (a 20000x20000 RGB frame would need 1.2 GB).
DEFAULT_MAX_PIXELS = 50_000_000


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, BMP, ...) to an RGB uint8 array.

    The header is read first, so an oversized image is refused without decoding it.

    Raises:
        ImageError: empty, unrecognised, truncated or oversized input.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as probe:
                width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is over the limit of pixels that are decoded ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})") from exc
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        # OpenCV cannot read every format Pillow can (or the body is truncated): try Pillow fully.
        try:
            with Image.open(BytesIO(data)) as img:
                return to_rgb(np.asarray(img.convert("RGB")), name=name, max_pixels=max_pixels)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: corrupt or truncated image data ({exc})") from exc
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB
        array = cv2.cvtColor(array, code)
    return to_rgb(array, name=name, max_pixels=max_pixels)


def load_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file to RGB uint8.

    Raises:
        ImageError: missing, unreadable or bad file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def to_rgb(array: np.ndarray, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Check an in-memory image and return it as a contiguous HxWx3 RGB uint8 array.

    Accepts HxW grey, HxWx1, HxWx3 (taken as RGB) and HxWx4 (alpha dropped); uint16 images
    are scaled down to 8 bits.

    Raises:
        ImageError: not an array, empty, wrong rank/channels/dtype, or oversized.
    """
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.size == 0:
        raise ImageError(f"{name}: empty image (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected shape HxW, HxWx3 or HxWx4, got {array.shape}")
    height, width = array.shape[:2]
    if height * width > max_pixels:
        raise ImageError(f"{name}: image is {width}x{height} pixels, over the limit of {max_pixels}")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name}: expected dtype uint8 (or uint16), got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)
