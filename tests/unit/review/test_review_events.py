"""The event hub: bounded per-subscriber queues, oldest dropped and counted, thread-safe publish."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from openlfr.review.events import EventHub, sse_comment, sse_frame
from openlfr.review.exceptions import HubFull


def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub(queue_size=10)
    a, b = hub.subscribe(), hub.subscribe()
    for i in range(3):
        hub.publish("alert", {"n": i})
    for sub in (a, b):
        events = [sub.get(timeout=0) for _ in range(3)]
        assert [e.data["n"] for e in events] == [0, 1, 2]
        assert [e.seq for e in events] == [1, 2, 3]
        assert sub.get(timeout=0) is None
    assert hub.published_total == 3 and hub.dropped_total == 0


def test_a_slow_subscriber_loses_its_oldest_and_it_is_counted() -> None:
    hub = EventHub(queue_size=3)
    slow, fast = hub.subscribe(), hub.subscribe()
    for i in range(5):
        hub.publish("alert", {"n": i})
        assert fast.get(timeout=0).data["n"] == i
    assert slow.pending() == 3
    assert [slow.get(timeout=0).data["n"] for _ in range(3)] == [2, 3, 4]
    assert (slow.dropped, fast.dropped, hub.dropped_total) == (2, 0, 2)


def test_publish_never_blocks_with_no_or_stuck_subscribers() -> None:
    hub = EventHub(queue_size=2)
    hub.publish("alert", {"n": 0})  # nobody listens: fine
    hub.subscribe()  # never read
    start = time.monotonic()
    for i in range(10_000):
        hub.publish("review", {"n": i})
    assert time.monotonic() - start < 5
    assert hub.dropped_total == 9_998


def test_publish_from_many_threads_is_safe() -> None:
    hub = EventHub(queue_size=100_000)
    sub = hub.subscribe()
    threads = [
        threading.Thread(target=lambda t=t: [hub.publish("alert", {"t": t, "i": i}) for i in range(500)])
        for t in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    events = []
    while (e := sub.get(timeout=0)) is not None:
        events.append(e)
    assert len(events) == 4000 and hub.published_total == 4000
    assert sorted(e.seq for e in events) == list(range(1, 4001))
    for t in range(8):
        assert [e.data["i"] for e in events if e.data["t"] == t] == list(range(500))  # each thread's order kept


def test_get_waits_for_an_event_from_another_thread() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    threading.Timer(0.05, lambda: hub.publish("alert", {"late": True})).start()
    event = sub.get(timeout=5)
    assert event is not None and event.data == {"late": True}
    assert sub.get(timeout=0.01) is None


def test_async_next_wakes_on_a_publish_from_another_thread() -> None:
    async def main() -> list:
        hub = EventHub()
        sub = hub.subscribe(loop=asyncio.get_running_loop())
        assert await sub.next(0.01) is None  # times out
        threading.Timer(0.05, lambda: hub.publish("review", {"x": 1})).start()
        got = await sub.next(5)
        threading.Timer(0.05, hub.close).start()
        ended = await sub.next(5)
        return [got, ended, sub.closed, len(hub)]

    got, ended, closed, left = asyncio.run(main())
    assert got.kind == "review" and got.data == {"x": 1}
    assert (ended, closed, left) == (None, True, 0)


def test_next_needs_a_loop() -> None:
    sub = EventHub().subscribe()
    with pytest.raises(RuntimeError, match="loop="):
        asyncio.run(sub.next(0.01))


def test_subscribers_are_bounded_and_close_unsubscribes() -> None:
    hub = EventHub(max_subscribers=2)
    a = hub.subscribe()
    with hub.subscribe():
        assert hub.full()
        with pytest.raises(HubFull, match="2 live streams"):
            hub.subscribe()
    assert len(hub) == 1 and not hub.full()
    a.close()
    a.close()  # twice is fine
    assert len(hub) == 0
    hub.publish("alert", {})
    assert a.get(timeout=0) is None


def test_closing_the_hub_ends_waiting_readers_and_refuses_new_ones() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    threading.Timer(0.05, hub.close).start()
    assert sub.get(timeout=5) is None and sub.closed
    with pytest.raises(HubFull, match="closed"):
        hub.subscribe()


def test_a_subscriber_whose_loop_is_closed_is_dropped() -> None:
    hub = EventHub()
    loop = asyncio.new_event_loop()
    sub = hub.subscribe(loop=loop)
    loop.close()
    hub.publish("alert", {})
    assert sub.closed and len(hub) == 0


def test_sse_frames() -> None:
    hub = EventHub()
    event = hub.publish("alert", {"a": "b\nc", "n": 1})
    assert sse_frame(event) == 'id: 1\nevent: alert\ndata: {"a":"b\\nc","n":1}\n\n'
    assert sse_comment("heartbeat") == ": heartbeat\n\n"
    with pytest.raises(ValueError):
        sse_comment("two\nlines")


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"max_subscribers": 0}])
def test_bad_sizes(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EventHub(**kwargs)
