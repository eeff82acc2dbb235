"""Input limits of the HTTP APIs: request body size, uploaded images.

``BodySizeLimit`` refuses a body over the limit with 413 before it is read whole (by its
``Content-Length``, and by counting when it is sent chunked). ``StrictJson`` refuses, with 400,
JSON bodies with ``NaN``/``Infinity`` or lone surrogates. ``read_image`` checks an uploaded
image's type, size and pixel count and decodes it, answering 413/415/422 with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import HTTPException, status

from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import decode_image

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Image types accepted for enrolment, by Content-Type.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp"})


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"BodySizeLimit.max_bytes: expected >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _refuse(send, status.HTTP_400_BAD_REQUEST, "Content-Length is not a number")
                    return
                if length > self.max_bytes:
                    await _refuse(send, status.HTTP_413_CONTENT_TOO_LARGE, self._detail(length))
                    return
        received = 0
        too_large = False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _refuse(send, status.HTTP_413_CONTENT_TOO_LARGE, self._detail(received))

    def _detail(self, size: int) -> str:
        return f"request body of {size} bytes is over the limit of {self.max_bytes} bytes"


class DecodeSlots:
    """At most ``slots`` images decoded and analysed at once; a request that finds none free
    within ``wait_s`` gets 503 with ``Retry-After``, so the memory decoding takes is bounded:
    about ``slots`` x (``max_image_pixels`` x 3 bytes, the decoded RGB, plus the analyzer's
    working copies) whatever the number of concurrent uploads."""

    def __init__(self, slots: int, *, wait_s: float) -> None:
        if slots < 1:
            raise ValueError(f"DecodeSlots.slots: expected >= 1, got {slots}")
        self.slots = slots
        self.wait_s = wait_s
        self._semaphore = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block. Raises HTTPException 503 when none frees in time."""
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"{self.slots} image(s) are being decoded already (OPENLFR_API_MAX_CONCURRENT_DECODES); "
                       "try again shortly",
                headers={"Retry-After": "2"},
            )
        try:
            yield
        finally:
            self._semaphore.release()


class StrictJson:
    """ASGI middleware: 400 for a JSON body that Python's parser takes but no other should.

    ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259), and a lone surrogate
    (``"\\ud800"``) decodes to a string no UTF-8 encoder can write back: either would reach a
    handler, a database or the audit log and fail there (500). Other malformed JSON is left to
    the framework's own 422. The body is read whole, so this runs inside ``BodySizeLimit``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _json_problem(body)
        if problem is not None:
            await _refuse(send, status.HTTP_400_BAD_REQUEST, problem)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}]), send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


def _replay(messages: list[Message]) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


def _json_problem(body: bytes) -> str | None:
    """Why ``body`` is refused (see ``StrictJson``), or None (also for JSON the framework refuses)."""
    if not body:
        return None

    def constant(name: str) -> Any:
        raise _NotJson(f"{name} is not a JSON number; send a finite number or null")

    try:
        value = json.loads(body, parse_constant=constant)
    except _NotJson as exc:
        return f"invalid JSON body: {exc}"
    except ValueError:
        return None  # malformed or not UTF-8: the framework answers 422 with where
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"invalid JSON body: a string holds a lone surrogate (\\u{ord(exc.object[exc.start]):04x}), "
                "which is not a character")
    return None


class _NotJson(ValueError):
    """Raised by the parser on a constant JSON does not have."""


class _BodyTooLarge(Exception):
    """Raised inside the app's receive to abandon a chunked body over the limit."""


async def _refuse(send: Send, code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def sniff_image_type(data: bytes) -> str | None:
    """The image type ``data``'s first bytes say it is (one of ``IMAGE_TYPES``), or None for any
    other content (TIFF, GIF, HEIC, SVG, a text file ...), whatever the client declared."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    return None


def read_image(data: bytes, *, content_type: str | None, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image (RGB uint8), or answer why not.

    The content decides the type, not the client's Content-Type: a TIFF or GIF sent as
    ``image/jpeg`` is refused before any decoder sees it (the decoders would take it), and a
    JPEG sent as ``image/png`` is taken as the JPEG it is.

    Raises:
        HTTPException: 415 for a declared or actual type outside ``IMAGE_TYPES``, 413 over
            ``max_bytes``, 422 for an empty, corrupt or oversized (pixels) image.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in IMAGE_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type {kind or '(none)'!r} is not an accepted image type; send one of {sorted(IMAGE_TYPES)}",
        )
    if len(data) > max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"image of {len(data)} bytes is over the limit of {max_bytes} bytes",
        )
    if data and sniff_image_type(data) is None:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"sent as {kind}, but the content is not a JPEG, PNG, WebP or BMP image (its first bytes: "
                   f"{data[:8].hex()}); send one of {sorted(IMAGE_TYPES)}",
        )
    try:
        return decode_image(data, name="uploaded image", max_pixels=max_pixels)
    except ImageError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
