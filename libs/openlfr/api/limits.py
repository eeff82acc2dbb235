"""Input limits of the HTTP APIs: request body size, uploaded images.

``BodySizeLimit`` refuses a body over the limit with 413 before it is read whole (by its
``Content-Length``, and by counting when it is sent chunked). ``read_image`` checks an uploaded
image's type, size and pixel count and decodes it, answering 413/415/422 with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
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


def read_image(data: bytes, *, content_type: str | None, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image (RGB uint8), or answer why not.

    Raises:
        HTTPException: 415 for a type outside ``IMAGE_TYPES``, 413 over ``max_bytes``, 422 for
            an empty, corrupt or oversized (pixels) image.
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
    try:
        return decode_image(data, name="uploaded image", max_pixels=max_pixels)
    except ImageError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
