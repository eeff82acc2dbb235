"""The review API's live stream (``/v1/alerts/stream``) over a real uvicorn server: alerts and
reviews published after connecting, its refusals, and a stream that falls behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openlfr.review.testing import ReviewApp, bearer, build_review_app, make_alert
from openlfr.service.http import run_http_in_thread


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ReviewApp, str]]:
    review = build_review_app(tmp_path, heartbeat_s=0.2, max_streams=2)
    http = run_http_in_thread(review.app, "127.0.0.1", 0)
    try:
        yield review, f"http://127.0.0.1:{http.port}"
    finally:
        review.hub.close()
        http.stop()
        review.store.close()


def _frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE frames as dicts (comments under ":"), from a response's lines."""
    frame: dict[str, str] = {}
    for line in lines:
        if line == "":
            if frame:
                yield frame
            frame = {}
            continue
        field, _, value = line.partition(":")
        frame[field] = frame.get(field, "") + value.removeprefix(" ")


def _until(frames: Iterator[dict[str, str]], predicate) -> dict[str, str]:  # noqa: ANN001
    for frame in frames:
        if predicate(frame):
            return frame
    raise AssertionError("the stream ended first")


def test_stream_delivers_alerts_and_reviews_published_after_connecting(server: tuple[ReviewApp, str]) -> None:
    review, base = server
    alert = make_alert(track="sse-1")
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10.0)) as http:
        with http.stream("GET", "/v1/alerts/stream", headers=bearer("victor")) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = _frames(response.iter_lines())
            assert _until(frames, lambda f: "" in f)[""] == "connected"  # subscribed: now publish
            assert review.service.on_alert(alert)
            event = _until(frames, lambda f: f.get("event") == "alert")
            data = json.loads(event["data"])
            assert data["alert_id"] == alert.alert_id and data["status"] == "pending"
            assert data["probe_url"] == f"/v1/alerts/{alert.alert_id}/probe.jpg"
            assert "probe_chip_jpeg" not in data and int(event["id"]) >= 1

            assert http.post(f"/v1/alerts/{alert.alert_id}/reviews", json={"decision": "confirm"},
                             headers=bearer("alice")).status_code == 200
            event = _until(frames, lambda f: f.get("event") == "review")
            data = json.loads(event["data"])
            assert (data["alert_id"], data["previous_status"], data["alert"]["status"], data["step"]["reviewer"]) == (
                alert.alert_id, "pending", "awaiting_second", "alice"
            )
            assert _until(frames, lambda f: f.get("") == "heartbeat")
            assert not review.service.on_alert(alert)  # a replay is not published again
            review.hub.close()
            rest = list(frames)
            assert all(f.get("event") != "alert" for f in rest)


def test_stream_refusals(server: tuple[ReviewApp, str]) -> None:
    review, base = server
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10.0)) as http:
        r = http.get("/v1/alerts/stream")
        assert r.status_code == 401
        r = http.get("/v1/alerts/stream?token=victor-token-012345678")
        assert r.status_code == 401  # tokens are never taken from a URL
        with http.stream("GET", "/v1/alerts/stream", headers=bearer("victor")) as one, \
                http.stream("GET", "/v1/alerts/stream", headers=bearer("alice")) as two:
            # Keep the readers: a discarded line iterator closes its response.
            readers = [_frames(response.iter_lines()) for response in (one, two)]
            for frames in readers:
                _until(frames, lambda f: f.get("") == "connected")
            r = http.get("/v1/alerts/stream", headers=bearer("bob"))
            assert r.status_code == 503 and "2 at most" in r.json()["detail"]
            assert review.sample("openlfr_review_stream_subscribers") == 2


def test_a_stream_that_falls_behind_is_told_to_resync() -> None:
    from openlfr.review.api import _events
    from openlfr.review.events import EventHub

    async def main() -> list[str]:
        hub = EventHub(queue_size=2)
        stream = _events(hub, 0.2, "victor")
        chunks = [await anext(stream)]  # subscribed
        for i in range(5):  # the stream is not reading: its queue overflows
            hub.publish("alert", {"n": i})
        chunks += [await anext(stream) for _ in range(3)]
        chunks.append(await anext(stream))  # nothing more: a heartbeat
        hub.close()
        chunks += [chunk async for chunk in stream]
        assert len(hub) == 0 and hub.dropped_total == 3
        return chunks

    connected, resync, third, fourth, heartbeat, *after = asyncio.run(main())
    assert connected == "retry: 3000\n: connected\n\n"
    assert resync == 'event: resync\ndata: {"dropped": 3}\n\n'  # before the first event after the gap
    assert third == 'id: 4\nevent: alert\ndata: {"n":3}\n\n'
    assert fourth == 'id: 5\nevent: alert\ndata: {"n":4}\n\n'
    assert heartbeat == ": heartbeat\n\n" and after == []
