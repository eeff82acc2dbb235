"""The Kafka loop's pure logic: commit offsets with holds, backoff."""

from __future__ import annotations

import pytest

from openlfr.kafka.runner import Backoff, commit_targets, next_offsets


@pytest.mark.parametrize(
    ("acked", "hold", "committed", "expected"),
    [
        pytest.param({0: 10}, {}, {}, {0: 10}, id="first-commit"),
        pytest.param({0: 10, 1: 5}, {}, {0: 3, 1: 2}, {0: 10, 1: 5}, id="forward"),
        pytest.param({0: 10}, {0: 4}, {0: 0}, {0: 4}, id="hold-caps"),
        pytest.param({0: 10}, {0: 12}, {0: 0}, {0: 10}, id="hold-above-acked"),
        pytest.param({0: 10}, {0: 4}, {0: 4}, {}, id="hold-equal-committed-no-op"),
        pytest.param({0: 10}, {0: 2}, {0: 4}, {}, id="never-backwards"),
        pytest.param({0: 10}, {}, {0: 10}, {}, id="already-committed"),
        pytest.param({0: 10, 1: 7}, {1: 6}, {0: 1, 1: 1}, {0: 10, 1: 6}, id="hold-one-partition"),
        pytest.param({0: 10}, {3: 1}, {}, {0: 10}, id="hold-of-other-partition-ignored"),
        pytest.param({}, {0: 4}, {0: 1}, {}, id="nothing-acked"),
    ],
)
def test_commit_targets(
    acked: dict[int, int], hold: dict[int, int], committed: dict[int, int], expected: dict[int, int]
) -> None:
    assert commit_targets(acked=acked, hold=hold, committed=committed) == expected


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {}),
        ([(0, 0)], {0: 1}),
        ([(0, 5), (0, 3), (1, 9), (0, 7)], {0: 8, 1: 10}),
    ],
)
def test_next_offsets(pairs: list[tuple[int, int]], expected: dict[int, int]) -> None:
    assert next_offsets(pairs) == expected


def test_next_offsets_refuses_negative_offsets() -> None:
    with pytest.raises(ValueError, match="offset=-1"):
        next_offsets([(0, -1)])


@pytest.mark.parametrize(
    ("backoff", "attempts", "expected"),
    [
        (Backoff(initial_s=0.2, max_s=30), range(4), [0.2, 0.4, 0.8, 1.6]),
        (Backoff(initial_s=1, max_s=5), range(5), [1, 2, 4, 5, 5]),
        (Backoff(initial_s=0.5, max_s=0.5), range(3), [0.5, 0.5, 0.5]),
        (Backoff(initial_s=1, max_s=10, factor=3), range(4), [1, 3, 9, 10]),
        (Backoff(initial_s=1, max_s=7), [10_000, 10**9], [7, 7]),
    ],
)
def test_backoff_schedule(backoff: Backoff, attempts: range, expected: list[float]) -> None:
    assert [backoff.delay(a) for a in attempts] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": 0}, "initial_s=0"),
        ({"initial_s": 2, "max_s": 1}, "max_s=1"),
        ({"factor": 0.5}, "factor=0.5"),
    ],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_backoff_refuses_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt=-1"):
        Backoff().delay(-1)
