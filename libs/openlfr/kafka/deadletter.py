"""Dead-letter records: a reference to the original and at most a truncated copy of its bytes.

A dead letter must always be deliverable, or the stage that sends it stalls on it: so a record
names where the original is (topic, partition, offset), its size and SHA-256, and keeps at most
the first ``payload_max_bytes`` of its value, never enough to reach the broker's message limit
(:func:`payload_budget`). Topics whose values carry faces (frames, chips, embeddings, the chips of
matches and alerts) keep metadata only: no byte of the value, so the dead-letter topic's long
retention never keeps a face. The original stays readable by its reference for as long as its own
topic keeps it, and the hash says whether what is read there is what failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from openlfr.messages.codec import encode, headers_for
from openlfr.messages.models import DeadLetter
from openlfr.messages.topics import ALERTS, EMBEDDINGS, FACES, FRAMES, MATCHES, TopicSpec

REASON_MAX = 4000  # DeadLetter.reason's max_length
HEADER_REASON_MAX = 1000
KEY_MAX = 256
HEADERS_MAX = 32
HEADER_VALUE_MAX = 256
HEADER_NAME_MAX = 64

#: What dead letters keep of a value by default (topics without faces): enough to see what it
#: was (``OPENLFR_DEADLETTER_PAYLOAD_BYTES``).
DEFAULT_DEADLETTER_PAYLOAD_BYTES = 16 * 1024

#: Room in a dead-letter record for all but the payload: the reason (4000 characters, up to six
#: bytes each once JSON-escaped), the key, 32 headers, the reference fields and the Kafka
#: headers that repeat the error; generous, so the sum cannot reach the limit.
RECORD_OVERHEAD_BYTES = 128 * 1024

#: Default names of the topics whose values carry a face: JPEG frames, aligned chips,
#: embeddings, and the probe and reference chips of matches and alerts.
FACE_TOPICS: frozenset[str] = frozenset(
    spec.name for spec in (FRAMES, FACES, EMBEDDINGS, MATCHES, ALERTS)
)


def keeps_payload(spec: TopicSpec) -> bool:
    """Whether dead letters of ``spec``'s messages may keep any byte of the value."""
    return spec.name not in FACE_TOPICS


def payload_budget(max_message_bytes: int) -> int:
    """The most payload bytes a dead-letter record can hold and stay within
    ``max_message_bytes`` once base64-encoded beside everything else.

    Raises:
        ValueError: The limit leaves no room even for the record without a payload.
    """
    room = max_message_bytes - RECORD_OVERHEAD_BYTES
    if room <= 0:
        raise ValueError(
            f"max_message_bytes={max_message_bytes}, expected > {RECORD_OVERHEAD_BYTES} "
            "(room for a dead-letter record's reason, key and headers)"
        )
    return room // 4 * 3  # base64: 4 characters per 3 bytes


def _text(value: bytes | str | None, limit: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else value.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter_record(
    *,
    stage: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | str | None]] | None,
    failed_ts: float,
    payload_max_bytes: int,
) -> DeadLetter:
    """The dead-letter record of one input: why it failed, where it is, at most its first bytes.

    Args:
        stage: The stage that gave up on it.
        reason: Why; cut to what ``DeadLetter`` allows.
        topic: The original's topic (its actual name).
        partition: The original's partition.
        offset: The original's offset.
        key: The original's key; cut to 256 bytes (``key_bytes`` keeps its length).
        value: The original's value (None: a record without one).
        headers: The original's headers; at most 32 kept, as text, values cut to 256 characters.
        failed_ts: When it failed (seconds since the epoch).
        payload_max_bytes: The most bytes of the value kept: 0 for metadata only (topics that
            carry faces: see :func:`keeps_payload`).

    Raises:
        ValueError: ``payload_max_bytes`` is negative.
    """
    if payload_max_bytes < 0:
        raise ValueError(f"payload_max_bytes={payload_max_bytes}, expected >= 0")
    if len(reason) > REASON_MAX:
        reason = reason[: REASON_MAX - 3] + "..."
    raw_key = key.encode("utf-8") if isinstance(key, str) else key
    data = value or b""
    payload: Literal["whole", "truncated", "omitted"]
    if payload_max_bytes == 0:
        payload, kept = "omitted", b""
    elif len(data) <= payload_max_bytes:
        payload, kept = "whole", data
    else:
        payload, kept = "truncated", data[:payload_max_bytes]
    kept_headers: dict[str, str] = {}
    for name, header in (headers or ())[:HEADERS_MAX]:
        kept_headers[_text(name, HEADER_NAME_MAX)] = _text(header, HEADER_VALUE_MAX)
    return DeadLetter(
        stage=stage,
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if raw_key is None else raw_key[:KEY_MAX],
        key_bytes=0 if raw_key is None else len(raw_key),
        value_bytes=len(data),
        value_sha256=hashlib.sha256(data).hexdigest(),
        payload=payload,
        value=kept,
        headers=kept_headers,
        failed_ts=failed_ts,
    )


def dead_letter_headers(record: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: the error and its origin, readable without parsing."""
    reason = record.reason.encode("utf-8")[:HEADER_REASON_MAX]
    return [
        *headers_for(record),
        ("v", str(record.v).encode()),
        ("stage", record.stage.encode("utf-8")),
        ("error", reason),
        ("origin", f"{record.topic}[{record.partition}]@{record.offset}".encode()),
    ]


def encoded_size(record: DeadLetter) -> int:
    """Bytes of the record's value and headers on the wire (before compression)."""
    return len(encode(record)) + sum(
        len(name) + len(value) for name, value in dead_letter_headers(record)
    )
