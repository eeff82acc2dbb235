"""A reader for dlib's binary serialization format (``dlib/serialize.h``), without dlib.

Only what the project's model files need: integers, floats, strings, vectors and matrices.
Format facts (checked against ``shape_predictor_5_face_landmarks.dat`` and
``dlib_face_recognition_resnet_model_v1.dat``):

* integer: one control byte (low nibble = number of magnitude bytes, bit 0x80 = negative),
  then the magnitude, little-endian;
* float/double: a mantissa integer then an exponent integer, value = mantissa * 2**exponent,
  with reserved exponents for infinities and NaN;
* string / std::vector: an integer length, then the items;
* matrix: rows and columns as integers (written negated by current dlib, to tell the format
  apart from the old one), then the elements row-major, each serialized on its own.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from openlfr.models.exceptions import DlibFormatError

# float_details (dlib/float_details.h): reserved exponents for the special values.
_EXP_INF = 32000
_EXP_NINF = 32001
_EXP_NAN = 32002


class DlibReader:
    """Sequential reader over the bytes of a dlib-serialized object."""

    def __init__(self, data: bytes, *, name: str = "<bytes>") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.name = name

    @classmethod
    def from_file(cls, path: Path | str) -> DlibReader:
        """Read a whole file (model files are tens of megabytes at most)."""
        path = Path(path)
        return cls(path.read_bytes(), name=str(path))

    @property
    def pos(self) -> int:
        """Offset of the next byte to read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes left after the current position."""
        return len(self._data) - self._pos

    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte offset {self._pos}")

    def read_bytes(self, n: int) -> bytes:
        """Read ``n`` raw bytes."""
        if n < 0 or self._pos + n > len(self._data):
            raise self._fail(f"unexpected end of data reading {n} bytes")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def read_int(self) -> int:
        """Read one packed integer (any of dlib's signed or unsigned integer types)."""
        ctrl = self.read_bytes(1)[0]
        size = ctrl & 0x0F
        if size > 8:
            raise self._fail(f"integer control byte 0x{ctrl:02x} claims {size} bytes")
        value = int.from_bytes(self.read_bytes(size), "little") if size else 0
        return -value if ctrl & 0x80 else value

    def read_float(self) -> float:
        """Read a float or double written as a mantissa/exponent pair."""
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        if exponent == _EXP_NAN:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def read_bool(self) -> bool:
        """Read a bool (dlib writes it as one raw byte)."""
        return self.read_bytes(1)[0] != 0

    def read_string(self) -> str:
        """Read a length-prefixed std::string."""
        n = self.read_int()
        return self.read_bytes(n).decode("latin-1")

    def expect_string(self, expected: str) -> None:
        """Read a string and fail unless it equals ``expected`` (dlib's version tags)."""
        got = self.read_string()
        if got != expected:
            raise self._fail(f"expected tag {expected!r}, found {got!r}")

    def read_float_matrix(self) -> np.ndarray:
        """Read a ``dlib::matrix<float|double>`` as a float64 array of shape (rows, cols)."""
        nr = self.read_int()
        nc = self.read_int()
        # Current dlib writes negated dimensions; old files wrote them positive.
        nr, nc = abs(nr), abs(nc)
        values = [self.read_float() for _ in range(nr * nc)]
        return np.asarray(values, dtype=np.float64).reshape(nr, nc)
