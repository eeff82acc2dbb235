"""The registry API against hostile or careless input (issue 11, "API hardening"): the content
decides an image's type, a copy of an enrolled photo cannot become a second person, JSON that
only Python's parser takes is refused, and ids, names and query integers are bounded."""

from __future__ import annotations

import io
import json
import threading

import cv2
import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from openlfr.api.limits import DecodeSlots, sniff_image_type

from .test_registry_api import deployment_body, make_subject, make_watchlist, upload


def _convert(jpeg: bytes, fmt: str) -> bytes:
    out = io.BytesIO()
    options = {"compression": "tiff_jpeg"} if fmt == "TIFF" else {}
    Image.open(io.BytesIO(jpeg)).convert("RGB").save(out, format=fmt, **options)
    return out.getvalue()


def test_the_content_decides_an_images_type(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env)
    tiff, gif = _convert(image_bytes["obama"], "TIFF"), _convert(image_bytes["obama"], "GIF")
    assert sniff_image_type(tiff) is None and sniff_image_type(gif) is None
    for data, declared in ((tiff, "image/jpeg"), (gif, "image/png"), (b"<svg/>" * 10, "image/png")):
        r = upload(env, "s-1", data, kind=declared)
        assert r.status_code == 415, r.text
        assert f"sent as {declared}, but the content is not a JPEG, PNG, WebP or BMP" in r.text
    assert env.store.count() == 0
    # A JPEG labelled PNG is the JPEG it is.
    assert sniff_image_type(image_bytes["obama"]) == "image/jpeg"
    assert upload(env, "s-1", image_bytes["obama"], kind="image/png").status_code == 201


def test_a_copy_of_an_enrolled_photo_cannot_be_a_second_person(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env, "s-1")
    make_subject(env, "s-2")
    assert upload(env, "s-1", image_bytes["obama"]).status_code == 201
    bgr = cv2.imdecode(np.frombuffer(image_bytes["obama"], np.uint8), cv2.IMREAD_COLOR)
    smaller = cv2.resize(bgr, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    copy = cv2.imencode(".jpg", smaller, [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes()
    assert copy != image_bytes["obama"]  # not byte-identical: the SHA-256 check alone lets it through
    r = upload(env, "s-2", copy)
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["reason"] == "near_duplicate" and "subject 's-1'" in r.json()["detail"]["message"]
    assert env.registry.get_subject("s-2").images == []
    # Another photo of the same person is not a copy; a copy on the subject itself is allowed.
    assert upload(env, "s-2", image_bytes["obama2"]).status_code == 201
    assert upload(env, "s-1", copy).status_code == 201


@pytest.mark.parametrize("body", [
    b'{"id": "wl-x", "name": "list \\ud800"}',
    b'{"id": "wl-x", "name": "list", "description": "\\udfff"}',
])
def test_json_with_a_lone_surrogate_is_a_400(env, body: bytes) -> None:
    r = env.call("alice", "POST", "/v1/watchlists", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "lone surrogate" in r.text
    assert env.call("vera", "GET", "/v1/watchlists").json()["total"] == 0


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_json_with_nan_or_infinity_is_a_400(env, value: str) -> None:
    make_watchlist(env)
    body = deployment_body(env)
    raw = json.dumps({**body, "threshold": "__X__"}).replace('"__X__"', value).encode()
    r = env.call("dave", "POST", "/v1/deployments", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and f"{value.lstrip('-')} is not a JSON number" in r.text
    assert env.call("vera", "GET", "/v1/deployments").json()["total"] == 0


@pytest.mark.parametrize("offset", [2**63, 2**64, 10**30])
def test_an_offset_beyond_any_list_is_a_422(env, offset: int) -> None:
    for path in ("/v1/watchlists", "/v1/deployments"):
        r = env.call("vera", "GET", path, params={"offset": str(offset)})
        assert r.status_code == 422, r.text


@pytest.mark.parametrize("bad_id", ["..", ".", ":", ".hidden", "-x", "@"])
def test_ids_start_with_a_letter_or_digit(env, bad_id: str) -> None:
    r = env.call("alice", "POST", "/v1/watchlists", json={"id": bad_id, "name": "n"})
    assert r.status_code == 422, r.text
    make_watchlist(env)
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, camera_ids=[bad_id]))
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "esc\x1b[31m", "bell\x07"])
def test_names_hold_no_control_characters(env, name: str) -> None:
    r = env.call("alice", "POST", "/v1/watchlists", json={"id": "wl-1", "name": name})
    assert r.status_code == 422 and "control character" in r.text, r.text
    # Free text may break lines, but not hold other control characters.
    ok = env.call("alice", "POST", "/v1/watchlists", json={"id": "wl-2", "name": "n", "description": "two\nlines"})
    assert ok.status_code == 201, ok.text


def test_decoding_takes_a_bounded_number_of_slots() -> None:
    slots = DecodeSlots(2, wait_s=0.05)
    held = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with slots.slot():
            held.wait()
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    held.wait()
    with pytest.raises(HTTPException) as refused:
        with slots.slot():
            pass
    assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "2"}
    assert "OPENLFR_API_MAX_CONCURRENT_DECODES" in refused.value.detail
    release.set()
    for t in threads:
        t.join()
    with slots.slot():  # free again
        pass
