"""Bad input at the image boundary gets a clear error or a correct empty result, never a crash."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import decode_image, load_image, to_rgb


def _png(width: int, height: int) -> bytes:
    """A valid grey PNG of the given size, compressed row by row without allocating it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj(1)
    row = b"\x00" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def jpeg_bytes(faces_dir: Path) -> bytes:
    return (faces_dir / "face_recognition/examples/obama_small.jpg").read_bytes()


def test_decodes_a_real_jpeg_to_rgb(jpeg_bytes: bytes) -> None:
    img = decode_image(jpeg_bytes)
    bgr = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not a readable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image"),
    ],
)
def test_garbage_bytes_raise_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, name="x.jpg")


def test_truncated_jpeg_gives_error_or_partial_image_never_crash(jpeg_bytes: bytes) -> None:
    try:
        img = decode_image(jpeg_bytes[: len(jpeg_bytes) // 3], name="cut.jpg")
    except ImageError as exc:
        assert "cut.jpg" in str(exc)
    else:
        # libjpeg fills the missing rows; the result is still a well-formed image.
        assert img.dtype == np.uint8 and img.shape[2] == 3


def test_header_only_file_is_refused() -> None:
    png = _png(64, 64)
    with pytest.raises(ImageError):
        decode_image(png[:40], name="header.png")


def test_huge_image_is_refused_before_decoding() -> None:
    data = _png(20000, 20000)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(data, name="huge.png")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_grey_and_rgba_pngs_become_rgb(tmp_path: Path) -> None:
    grey = np.arange(100, dtype=np.uint8).reshape(10, 10)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200  # red in RGBA
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    g = load_image(tmp_path / "g.png")
    a = load_image(tmp_path / "a.png")
    assert g.shape == (10, 10, 3) and (g[..., 0] == grey).all()
    assert a.shape == (10, 10, 3) and (a[..., 0] == 200).all() and (a[..., 2] == 0).all()


@pytest.mark.parametrize(
    ("array", "expected_shape", "error"),
    [
        (np.zeros((0, 0, 3), np.uint8), None, "empty image"),
        (np.zeros((5,), np.uint8), None, "expected shape"),
        (np.zeros((4, 4, 2), np.uint8), None, "expected shape"),
        (np.zeros((4, 4, 3), np.float32), None, "dtype"),
        ([[1, 2]], None, "numpy array"),
        (np.zeros((1, 1, 3), np.uint8), (1, 1, 3), None),
        (np.zeros((4, 4), np.uint8), (4, 4, 3), None),
        (np.zeros((4, 4, 1), np.uint8), (4, 4, 3), None),
        (np.zeros((4, 4, 4), np.uint8), (4, 4, 3), None),
        (np.full((4, 4, 3), 65535, np.uint16), (4, 4, 3), None),
    ],
)
def test_to_rgb(array: np.ndarray, expected_shape: tuple[int, ...] | None, error: str | None) -> None:
    if error:
        with pytest.raises(ImageError, match=error):
            to_rgb(array)
    else:
        out = to_rgb(array)
        assert out.shape == expected_shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_in_memory_oversized_array_is_refused() -> None:
    # A broadcast view: no 1.2 GB allocation, but the shape of a 20000x20000 frame.
    view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))
    with pytest.raises(ImageError, match="over the limit"):
        to_rgb(view)
