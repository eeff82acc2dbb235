"""Text the APIs accept: no control characters (NUL, escape, ...) and no lone surrogates, which a
log, a terminal, a database or a UTF-8 encoder would read as something else or refuse."""

from __future__ import annotations

import unicodedata

_REFUSED = ("Cc", "Cs")  # control characters, surrogates


def one_line(value: str) -> str:
    """``value`` when it holds no control character (line breaks included); else ValueError."""
    return _check(value, allowed="")


def free_text(value: str) -> str:
    """As :func:`one_line`, but line breaks and tabs are allowed."""
    return _check(value, allowed="\n\r\t")


def _check(value: str, *, allowed: str) -> str:
    for ch in value:
        if unicodedata.category(ch) in _REFUSED and ch not in allowed:
            raise ValueError(f"contains the control character U+{ord(ch):04X}; give printable text")
    return value
