"""Body size limit and uploaded-image checks (``openlfr.api.limits``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from openlfr.api.limits import BodySizeLimit, read_image


def _client(max_bytes: int) -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    return TestClient(app)


def test_a_body_within_the_limit_passes() -> None:
    assert _client(100).post("/echo", content=b"x" * 100).json() == {"received": 100}


def test_a_body_over_the_limit_is_413_by_its_length() -> None:
    response = _client(100).post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body of 101 bytes is over the limit of 100 bytes"}


def test_a_chunked_body_over_the_limit_is_413_once_counted() -> None:
    def chunks():
        for _ in range(5):
            yield b"y" * 40

    response = _client(100).post("/echo", content=chunks())
    assert response.status_code == 413 and "over the limit of 100 bytes" in response.json()["detail"]


def test_a_bad_content_length_is_400() -> None:
    response = _client(100).post("/echo", content=b"abc", headers={"Content-Length": "three"})
    assert response.status_code in (400, 413)  # the HTTP client may refuse to send it at all


def _png(h: int = 20, w: int = 30) -> bytes:
    ok, data = cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


def test_an_image_is_decoded_as_rgb() -> None:
    image = read_image(_png(), content_type="image/png; charset=binary", max_bytes=10_000, max_pixels=10_000)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    ("data", "content_type", "max_bytes", "max_pixels", "status", "detail"),
    [
        (_png(), "text/plain", 10_000, 10_000, 415, "not an accepted image type"),
        (_png(), None, 10_000, 10_000, 415, "(none)"),
        (_png(), "image/png", 10, 10_000, 413, "over the limit of 10 bytes"),
        (b"\x89PNG\r\n\x1a\nbroken", "image/png", 10_000, 10_000, 422, "uploaded image"),
        (b"", "image/jpeg", 10_000, 10_000, 422, "empty"),
        (_png(200, 200), "image/png", 1_000_000, 10_000, 422, "limit"),
    ],
)
def test_bad_images_get_a_4xx_that_says_why(data, content_type, max_bytes, max_pixels, status, detail) -> None:
    with pytest.raises(HTTPException) as caught:
        read_image(data, content_type=content_type, max_bytes=max_bytes, max_pixels=max_pixels)
    assert caught.value.status_code == status and detail in str(caught.value.detail)
