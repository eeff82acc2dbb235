"""The in-process hub that carries new alerts and review changes to live subscribers.

The Kafka loop thread and the HTTP threads :meth:`EventHub.publish`; each Server-Sent Events
response holds one :class:`Subscription`. ``publish`` is thread-safe and never blocks: every
subscription has a bounded queue, and a subscriber that falls behind loses its oldest events,
which are counted (per subscription and in all) so the stream can tell its client to reload.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import JsonValue

from openlfr.review.exceptions import HubFull

logger = logging.getLogger(__name__)

#: ``alert``: a new alert; ``review``: an alert's review status changed.
EventKind = Literal["alert", "review"]


@dataclass(frozen=True, slots=True)
class Event:
    """One published event; ``seq`` grows by one per publish, process-wide per hub."""

    seq: int
    kind: EventKind
    data: dict[str, JsonValue]


class Subscription:
    """One subscriber's bounded queue. Read it from a thread (:meth:`get`) or from the event
    loop it was made on (:meth:`next`); :meth:`close` unsubscribes."""

    def __init__(self, hub: EventHub, *, maxlen: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self._hub = hub
        self._maxlen = maxlen
        self._items: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._loop = loop
        self._wakeup = asyncio.Event() if loop is not None else None
        self._closed = False
        #: Events this subscriber lost because its queue was full.
        self.dropped = 0

    @property
    def closed(self) -> bool:
        """Whether it was closed (by itself or by the hub)."""
        return self._closed

    def _offer(self, event: Event) -> bool:
        """Queue an event, dropping the oldest when full; True if one was dropped."""
        with self._cond:
            if self._closed:
                return False
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)
            self._cond.notify_all()
        self._wake()
        return dropped

    def _wake(self) -> None:
        if self._loop is None or self._wakeup is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:
            # The subscriber's event loop is closed: nobody will read this queue again.
            logger.info("event subscriber's loop is closed; unsubscribing it")
            self.close()

    def _take(self) -> Event | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds (None: until one comes or it
        closes); None on timeout or once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    async def next(self, timeout: float) -> Event | None:
        """The next event, from the subscription's event loop; None after ``timeout`` seconds
        or once closed and drained."""
        if self._wakeup is None:
            raise RuntimeError("Subscription.next: subscribe with loop= to read from an event loop")
        self._wakeup.clear()  # before looking, so a publish after the look still wakes the wait
        event = self._take()
        if event is not None or self._closed:
            return event
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return None
        return self._take()

    def pending(self) -> int:
        """Events queued and not yet read."""
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        """Unsubscribe; a reader waiting in :meth:`get` or :meth:`next` returns."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._hub._remove(self)
        if self._loop is not None and self._wakeup is not None:
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:
                pass  # its loop is closed: there is no reader left to wake

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of events to bounded subscriber queues.

    Args:
        queue_size: events each subscriber may hold before it loses its oldest.
        max_subscribers: subscriptions allowed at once (each is one open stream).
    """

    def __init__(self, *, queue_size: int = 256, max_subscribers: int = 64) -> None:
        if queue_size < 1:
            raise ValueError(f"EventHub.queue_size: expected >= 1, got {queue_size}")
        if max_subscribers < 1:
            raise ValueError(f"EventHub.max_subscribers: expected >= 1, got {max_subscribers}")
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._seq = itertools.count(1)
        self._closed = False
        #: Events published, and events lost by slow subscribers (all subscribers together).
        self.published_total = 0
        self.dropped_total = 0

    def __len__(self) -> int:
        """Subscriptions open now."""
        with self._lock:
            return len(self._subs)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def full(self) -> bool:
        """Whether a new subscription would be refused."""
        with self._lock:
            return self._closed or len(self._subs) >= self.max_subscribers

    def subscribe(self, *, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """A new subscription, receiving every event published from now on.

        Args:
            loop: the event loop that will read it with :meth:`Subscription.next`.

        Raises:
            HubFull: ``max_subscribers`` are open, or the hub is closed.
        """
        with self._lock:
            if self._closed:
                raise HubFull("the event hub is closed (the service is stopping)")
            if len(self._subs) >= self.max_subscribers:
                raise HubFull(f"{self.max_subscribers} live streams are open, the most allowed; try again later")
            sub = Subscription(self, maxlen=self.queue_size, loop=loop)
            self._subs.append(sub)
        return sub

    def publish(self, kind: EventKind, data: dict[str, JsonValue]) -> Event:
        """Hand an event to every subscriber; thread-safe, never blocks."""
        with self._lock:
            event = Event(seq=next(self._seq), kind=kind, data=data)
            subs = list(self._subs)
            self.published_total += 1
        dropped = sum(sub._offer(event) for sub in subs)
        if dropped:
            with self._lock:
                self.dropped_total += dropped
            logger.warning('event subscribers fell behind and lost their oldest events dropped="%d"', dropped)
        return event

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def close(self) -> None:
        """Close every subscription (their streams end) and refuse new ones."""
        with self._lock:
            self._closed = True
            subs = list(self._subs)
        for sub in subs:
            sub.close()


def sse_frame(event: Event) -> str:
    """An event as one Server-Sent Events frame (``id``, ``event``, one ``data`` line)."""
    data = json.dumps(event.data, separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"


def sse_comment(text: str) -> str:
    """A Server-Sent Events comment (ignored by clients; keeps proxies from closing the stream)."""
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE comment must be one line")
    return f": {text}\n\n"


def heartbeat_ok(heartbeat_s: float) -> float:
    """``heartbeat_s`` checked: a positive, finite number of seconds."""
    if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
        raise ValueError(f"heartbeat_s: expected a positive number of seconds, got {heartbeat_s}")
    return float(heartbeat_s)
