"""Ingest's deployment gate (``openlfr.pipeline.deployment_watch``): covers, refresh, fail closed."""

from __future__ import annotations

import threading

import pytest

from openlfr.pipeline.deployment_watch import DeploymentWatcher, Window
from openlfr.pipeline.ingest_service import IngestServiceSettings
from openlfr.registry.exceptions import RegistryUnreachable

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _window(*cameras: str, start: float = T0, end: float = T0 + 3600, dep: str = "dep-1") -> Window:
    return Window(dep, frozenset(cameras), start, end)


def test_a_camera_is_covered_inside_an_active_window_only() -> None:
    watcher = DeploymentWatcher(lambda: [_window("cam-1", "cam-2")], clock=Clock())
    assert not watcher.covers("cam-1", T0 + 10)  # nothing known before the first poll: closed
    assert watcher.refresh()
    assert watcher.covers("cam-1", T0) and watcher.covers("cam-2", T0 + 3599)
    assert not watcher.covers("cam-1", T0 - 1) and not watcher.covers("cam-1", T0 + 3600)
    assert not watcher.covers("cam-3", T0 + 10)


def test_a_failed_poll_keeps_the_last_windows_until_they_are_stale_then_fails_closed() -> None:
    clock = Clock()
    answers: list[object] = [[_window("cam-1")], RegistryUnreachable("connection refused"), [_window("cam-1")]]

    def fetch() -> list[Window]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    watcher = DeploymentWatcher(fetch, poll_s=5, stale_after_s=30, clock=clock)
    assert watcher.refresh()
    clock.now = 20
    assert not watcher.refresh()
    assert watcher.covers("cam-1", T0 + 1)  # 20 s since the last answer: still trusted
    clock.now = 31
    assert not watcher.covers("cam-1", T0 + 1)  # stale: closed
    assert watcher.refresh()
    assert watcher.covers("cam-1", T0 + 1)


def test_an_ended_deployment_stops_covering_at_the_next_poll() -> None:
    answers = [[_window("cam-1")], []]
    watcher = DeploymentWatcher(lambda: answers.pop(0), clock=Clock())
    watcher.refresh()
    assert watcher.covers("cam-1", T0 + 1)
    watcher.refresh()
    assert not watcher.covers("cam-1", T0 + 1)


def test_the_thread_polls_until_closed() -> None:
    polled = threading.Event()
    calls = []

    def fetch() -> list[Window]:
        calls.append(1)
        if len(calls) >= 3:
            polled.set()
        return []

    watcher = DeploymentWatcher(fetch, poll_s=0.01, stale_after_s=1)
    watcher.start()
    assert polled.wait(5)
    watcher.close()
    n = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == n


def test_bad_watcher_arguments_and_settings_are_refused(monkeypatch) -> None:
    with pytest.raises(ValueError, match="poll_s"):
        DeploymentWatcher(list, poll_s=10, stale_after_s=5)
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("OPENLFR_CAMERAS", "cam-1=/dev/null")
    monkeypatch.setenv("OPENLFR_DEPLOYMENTS_URL", "http://127.0.0.1:8080")
    with pytest.raises(ValueError, match="OPENLFR_DEPLOYMENTS_TOKEN"):
        IngestServiceSettings()
    monkeypatch.setenv("OPENLFR_DEPLOYMENTS_TOKEN", "a-token-of-enough-length")
    assert IngestServiceSettings().deployments_url is not None
