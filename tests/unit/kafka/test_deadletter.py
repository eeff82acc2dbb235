"""Dead-letter records: a reference, a hash, at most a truncated payload, none for face topics,
never over the broker's message limit."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from openlfr.kafka.clients import DEFAULT_MAX_MESSAGE_BYTES
from openlfr.kafka.deadletter import (
    DEFAULT_DEADLETTER_PAYLOAD_BYTES,
    dead_letter_headers,
    dead_letter_record,
    encoded_size,
    keeps_payload,
    payload_budget,
)
from openlfr.messages.codec import decode, encode
from openlfr.messages.models import DeadLetter
from openlfr.messages.topics import (
    ALERTS,
    AUDIT_CHECKPOINTS,
    DEADLETTER,
    EMBEDDINGS,
    FACES,
    FRAMES,
    MATCHES,
    TopicSpec,
)


def _record(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "stage": "detect", "reason": "invalid Frame: x", "topic": "frames", "partition": 2,
        "offset": 812, "key": b"cam-1", "value": b"not json", "headers": [("kind", b"frame")],
        "failed_ts": 1.5, "payload_max_bytes": 1024,
    }
    fields.update(overrides)
    return dead_letter_record(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "headers", "payload_max", "expected"),
    [
        pytest.param(
            b"cam-1", b"not json", [("kind", b"frame")], 1024,
            (b"cam-1", 5, b"not json", "whole", 8, {"kind": "frame"}), id="whole",
        ),
        pytest.param(
            b"cam-1", b"0123456789", [], 4,
            (b"cam-1", 5, b"0123", "truncated", 10, {}), id="truncated",
        ),
        pytest.param(
            b"cam-1", b"\xff\xd8jpeg", [], 0,
            (b"cam-1", 5, b"", "omitted", 6, {}), id="metadata-only",
        ),
        pytest.param(None, None, None, 1024, (None, 0, b"", "whole", 0, {}), id="tombstone"),
        pytest.param(
            "cam-2", b"\xff\x00", [("bad", b"\xff"), ("none", None)], 1024,
            (b"cam-2", 5, b"\xff\x00", "whole", 2, {"bad": "\ufffd", "none": ""}),
            id="odd-headers",
        ),
        pytest.param(
            b"k" * 1000, b"v", [(f"h{i}", b"x" * 1000) for i in range(50)], 1024,
            (b"k" * 256, 1000, b"v", "whole", 1, {f"h{i}": "x" * 253 + "..." for i in range(32)}),
            id="long-key-and-headers-cut",
        ),
    ],
)
def test_dead_letter_record(
    key: bytes | str | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    payload_max: int,
    expected: tuple[object, ...],
) -> None:
    record = _record(key=key, value=value, headers=headers, payload_max_bytes=payload_max)
    assert (record.v, record.stage, record.topic, record.partition, record.offset) == (
        2, "detect", "frames", 2, 812,
    )
    assert (record.key, record.key_bytes, record.value, record.payload, record.value_bytes,
            record.headers) == expected
    assert record.value_sha256 == hashlib.sha256(value or b"").hexdigest()
    # Binary-safe on the wire.
    assert decode(encode(record), DeadLetter) == record


def test_a_record_near_the_broker_limit_is_dead_lettered_within_it() -> None:
    original = bytes(range(256)) * (900 * 1024 // 256)  # 900 KiB, incompressible-ish
    record = _record(
        value=original, reason="é" * 10_000, payload_max_bytes=DEFAULT_DEADLETTER_PAYLOAD_BYTES
    )
    assert record.payload == "truncated"
    assert record.value == original[:DEFAULT_DEADLETTER_PAYLOAD_BYTES]
    assert record.value_bytes == len(original)
    assert record.value_sha256 == hashlib.sha256(original).hexdigest()
    assert encoded_size(record) < DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("limit", [262_144, DEFAULT_MAX_MESSAGE_BYTES, 8_388_608])
def test_the_largest_payload_the_budget_allows_still_fits_the_limit(limit: int) -> None:
    # The worst case of every field: 32 distinct header names, control characters (escaped
    # as \u00XX in JSON: six bytes each).
    worst = _record(
        key=b"\x00" * 256,
        value=b"\x00" * (payload_budget(limit) + 10),
        reason="\x01" * 4000,
        headers=[(f"{i:02d}" + "\x02" * 62, b"\x03" * 256) for i in range(32)],
        payload_max_bytes=payload_budget(limit),
    )
    assert len(worst.headers) == 32 and worst.payload == "truncated"
    assert encoded_size(worst) <= limit


def test_payload_budget_refuses_a_limit_without_room() -> None:
    with pytest.raises(ValueError, match="max_message_bytes=1000"):
        payload_budget(1000)


@pytest.mark.parametrize(
    ("spec", "keeps"),
    [
        (FRAMES, False), (FACES, False), (EMBEDDINGS, False), (MATCHES, False), (ALERTS, False),
        (DEADLETTER, True), (AUDIT_CHECKPOINTS, True),
        (TopicSpec("openlfr.test.v1", 1, 1000, "test"), True),
    ],
)
def test_topics_that_carry_faces_keep_metadata_only(spec: TopicSpec, keeps: bool) -> None:
    assert keeps_payload(spec) is keeps


def test_dead_letter_record_cuts_long_reasons_and_names_origin_in_headers() -> None:
    record = _record(stage="embed", reason="x" * 10_000, topic="faces", partition=0, offset=7)
    assert len(record.reason) == 4000 and record.reason.endswith("...")
    headers = dict(dead_letter_headers(record))
    assert headers["kind"] == b"deadletter"
    assert headers["v"] == b"2"
    assert headers["stage"] == b"embed"
    assert headers["origin"] == b"faces[0]@7"
    assert len(headers["error"]) <= 1000


def test_format_1_records_are_refused_with_the_version_named() -> None:
    v1 = {
        "v": 1, "kind": "deadletter", "stage": "detect", "reason": "r", "topic": "t",
        "partition": 0, "offset": 0, "key": None, "value": "", "headers": {}, "failed_ts": 1.0,
    }
    with pytest.raises(ValidationError, match="v"):
        DeadLetter.model_validate_json(json.dumps(v1))


def test_negative_payload_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="payload_max_bytes=-1"):
        _record(payload_max_bytes=-1)
