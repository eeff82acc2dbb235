"""When a stage counts as stalled: no batch finished for a while with input waiting."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from openlfr.kafka.clients import is_permanent
from openlfr.kafka.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("events", "elapsed", "expected_age", "stalled"),
    [
        pytest.param([], 500, 0.0, False, id="idle-is-not-stalled"),
        pytest.param([("lag", 0)], 500, 0.0, False, id="caught-up"),
        pytest.param([("lag", 12)], 30, 30.0, False, id="lag-not-yet"),
        pytest.param([("lag", 12)], 60, 60.0, True, id="lag-without-progress"),
        pytest.param([("retrying", "delivery")], 61, 61.0, True, id="retried-for-long"),
        pytest.param([("batch_started", None)], 90, 90.0, True, id="handler-hangs"),
        pytest.param(
            [("retrying", "delivery"), ("advanced", None)], 500, 0.0, False,
            id="progress-clears-retry",
        ),
        pytest.param([("lag", 5), ("advanced", None)], 10, 10.0, False, id="keeping-up"),
    ],
)
def test_progress(
    events: list[tuple[str, object]], elapsed: float, expected_age: float, stalled: bool
) -> None:
    clock = Clock()
    progress = Progress(stall_after_s=60, clock=clock)
    for name, arg in events:
        method = getattr(progress, name)
        method() if arg is None else method(arg)
    clock.now += elapsed
    assert progress.age() == expected_age
    assert progress.stalled() is stalled
    ok, reason = progress.check()
    assert ok is not stalled
    assert (reason == "ok") is not stalled
    if stalled:
        assert reason.startswith(f"stalled: no batch finished for {elapsed:.0f}s")


def test_check_names_the_retry_reason() -> None:
    clock = Clock()
    progress = Progress(stall_after_s=5, clock=clock)
    progress.retrying("backend_unavailable: triton down")
    clock.now += 6
    assert progress.check() == (
        False, "stalled: no batch finished for 6s while a batch is retried "
        "(backend_unavailable: triton down)",
    )


def test_stall_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_after_s=0"):
        Progress(stall_after_s=0)


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, True),
        (KafkaError.RECORD_LIST_TOO_LARGE, True),
        (KafkaError.INVALID_RECORD, True),
        (KafkaError._MSG_TIMED_OUT, False),
        (KafkaError._TRANSPORT, False),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, False),
        (KafkaError.NOT_ENOUGH_REPLICAS, False),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
    ],
)
def test_which_delivery_errors_are_permanent(code: int, permanent: bool) -> None:
    assert is_permanent(KafkaError(code)) is permanent
