"""An HTTP error answer's ``detail`` in words, for the clients of the services' APIs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def validation_message(err: Mapping[str, Any]) -> str:
    """One pydantic validation error's message in words: a validator's own message without
    pydantic's ``Value error, `` preamble, anything else as pydantic words it."""
    message = str(err.get("msg", "invalid"))
    return message.removeprefix("Value error, ") if err.get("type") == "value_error" else message


def detail_words(detail: object) -> str:
    """A ``detail`` as one line: a string as itself, a ``{"reason", "message"}`` refusal as its
    message, FastAPI's validation errors as ``body.field: message; ...``."""
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}"
            if isinstance(item, dict) else str(item)
            for item in detail
        )
    return str(detail)
