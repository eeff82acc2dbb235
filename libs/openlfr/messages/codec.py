"""Encoding messages to Kafka values and headers, and decoding them with clear errors."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from openlfr.messages.models import Message

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A message value is not a valid instance of the topic's type; the text says why."""


def encode(message: BaseModel) -> bytes:
    """The message as UTF-8 JSON."""
    return message.model_dump_json().encode("utf-8")


def headers_for(message: BaseModel) -> list[tuple[str, bytes]]:
    """Kafka headers that repeat the routing fields, so tools can filter without parsing."""
    if not isinstance(message, Message):
        return [("kind", str(getattr(message, "kind", "")).encode())]
    return [
        ("kind", str(getattr(message, "kind", "")).encode()),
        ("v", str(message.v).encode()),
        ("camera_id", message.camera_id.encode()),
        ("frame_id", message.frame_id.encode()),
        ("capture_ts", repr(message.capture_ts).encode()),
        ("trace_id", message.trace_id.encode()),
    ]


def decode(value: bytes | None, model: type[M]) -> M:
    """Parse and validate a Kafka value as ``model``.

    Raises:
        DecodeError: empty, not JSON, or failing the schema (the first errors are named).
    """
    if not value:
        raise DecodeError(f"empty value where a {model.__name__} was expected")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise DecodeError(f"invalid {model.__name__}: {problems}") from exc
