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
  apart from the old one), then the elements row-major, each serialized on its own;
* bool: one ASCII character, ``'1'`` or ``'0'`` (``serialize(bool)`` writes it as text);
* DNN tensor (dlib's ``tensor.h``): a version integer, then num_samples, k, nr, nc as
  integers, then the elements row-major: version 2 as raw little-endian IEEE float32, version 1
  as one serialized float each.
"""

from __future__ import annotations

import math
import re
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

    def error(self, what: str, *, offset: int | None = None) -> DlibFormatError:
        """An error naming this data and a byte offset (the current one unless given).

        For parsers built on this reader, so that their errors say where the data went wrong in
        the same words as the reader's own.
        """
        at = self._pos if offset is None else offset
        return DlibFormatError(f"{self.name}: {what} at byte offset {at}")

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
        """Read a bool: dlib writes one ASCII character, ``'1'`` or ``'0'``, and rejects others."""
        start = self._pos
        ch = self.read_bytes(1)
        if ch == b"1":
            return True
        if ch == b"0":
            return False
        raise self.error(f"expected a bool ('0' or '1'), found byte 0x{ch[0]:02x}", offset=start)

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

    def read_tensor(self) -> np.ndarray:
        """Read a ``dlib::tensor`` / ``resizable_tensor`` as float32 of shape (n, k, nr, nc)."""
        start = self._pos
        version = self.read_int()
        if version not in (1, 2):
            raise self.error(f"unsupported dlib tensor version {version}", offset=start)
        dims = tuple(self.read_int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative dlib tensor dimensions {dims}", offset=start)
        count = math.prod(dims)
        if version == 2:
            # Raw float32; read_bytes refuses a count larger than the data before allocating.
            raw = self.read_bytes(4 * count)
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        # Version 1 spends at least two bytes per element; checking first keeps a corrupt count
        # from looping over millions of reads before failing.
        if 2 * count > self.remaining:
            raise self.error(f"tensor of {count} elements is longer than the data", offset=start)
        values = [self.read_float() for _ in range(count)]
        return np.asarray(values, dtype=np.float32).reshape(dims)

    # One packed integer per match: a control byte whose low nibble is the number of magnitude
    # bytes that follow (bit 0x80 = negative), then those bytes. The last alternative takes any
    # other byte alone, so tokenising never skips input; read_ints rejects such tokens.
    _INT_TOKEN = re.compile(
        rb"[\x00\x80]|[\x01\x81].|[\x02\x82].{2}|[\x03\x83].{3}|[\x04\x84].{4}"
        rb"|[\x05\x85].{5}|[\x06\x86].{6}|[\x07\x87].{7}|[\x08\x88].{8}|.",
        re.DOTALL,
    )

    def read_ints(self, n: int) -> np.ndarray:
        """Read ``n`` consecutive packed integers at once, as int64.

        Gives what ``n`` calls of :meth:`read_int` give, but the ``re`` engine splits the bytes
        and numpy decodes them: model files hold millions of integers (every float is two), which
        a Python loop takes seconds over. Control bytes other than dlib's (size 0..8, sign bit)
        and magnitudes of 2**63 or more are refused.
        """
        if n < 0:
            raise self._fail(f"negative integer count {n}")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        start = self._pos
        # An integer takes at most 9 bytes, so the first n tokens lie within 9n bytes; model
        # files average under 4, so a smaller window usually suffices and is tried first.
        for window in (4 * n + 16, 9 * n):
            end = min(len(self._data), start + window)
            tokens = self._INT_TOKEN.findall(self._data, start, end)
            if len(tokens) >= n or end == len(self._data):
                break
        if len(tokens) < n:
            raise self._fail(f"unexpected end of data reading {n} integers")
        lengths = np.fromiter(map(len, tokens[:n]), dtype=np.int64, count=n)
        offsets = np.empty(n, dtype=np.int64)
        offsets[0] = start
        np.cumsum(lengths[:-1], out=offsets[1:])
        offsets[1:] += start
        buf = np.frombuffer(self._data, dtype=np.uint8)
        ctrl = buf[offsets]
        sizes = (ctrl & 0x0F).astype(np.int64)
        bad = ((ctrl & 0x70) != 0) | (sizes > 8) | (lengths != sizes + 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DlibFormatError(
                f"{self.name}: bad integer control byte 0x{int(ctrl[i]):02x} at byte offset {int(offsets[i])}"
            )
        magnitude = np.zeros(n, dtype=np.uint64)
        for k in range(int(sizes.max())):
            has = sizes > k
            magnitude[has] |= buf[offsets[has] + 1 + k].astype(np.uint64) << np.uint64(8 * k)
        if (magnitude >> np.uint64(63)).any():
            i = int(np.argmax(magnitude >> np.uint64(63)))
            raise DlibFormatError(f"{self.name}: integer does not fit in 64 bits at byte offset {int(offsets[i])}")
        values = magnitude.astype(np.int64)
        np.negative(values, out=values, where=(ctrl & 0x80) != 0)
        self._pos = start + int(lengths.sum())
        return values

    def read_floats(self, n: int) -> np.ndarray:
        """Read ``n`` consecutive floats or doubles at once, as float64 (see :meth:`read_ints`)."""
        ints = self.read_ints(2 * n)
        return self.decode_floats(ints[0::2], ints[1::2])

    @staticmethod
    def decode_floats(mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
        """Floats from dlib's (mantissa, exponent) integer pairs, as float64 of the same shape.

        For parsers that read a float interleaved with integers in one :meth:`read_ints` call.

        Raises:
            DlibFormatError: an exponent no float has (other than the reserved ones).
        """
        mantissa = np.asarray(mantissa, dtype=np.int64)
        exponent = np.asarray(exponent, dtype=np.int64)
        if mantissa.shape != exponent.shape:
            raise ValueError(f"mantissa and exponent shapes differ: {mantissa.shape} vs {exponent.shape}")
        special = exponent >= _EXP_INF
        # Doubles need exponents of about +-1100 (53-bit mantissas); far larger ones can only
        # come from corrupt data, and would overflow np.ldexp's int32 or the result.
        if (np.abs(exponent[~special]) > 4096).any():
            raise DlibFormatError("a float exponent is out of range")
        out = np.ldexp(mantissa.astype(np.float64), np.where(special, 0, exponent).astype(np.int32))
        out[exponent == _EXP_INF] = math.inf
        out[exponent == _EXP_NINF] = -math.inf
        out[exponent == _EXP_NAN] = math.nan
        return out
