"""Scene crops: the rectangle around a face, the size and bytes of the JPEG, the settings."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from openlfr.vision.images import decode_image
from openlfr.vision.scene import SceneCropper, SceneCropSettings, fit_within, scene_box


@pytest.mark.parametrize(("box", "size", "expected"), [
    # A 100x100 face in the middle of a 1000x800 frame: a 300x300 square about its centre.
    ((450, 350, 550, 450), (1000, 800), (350, 250, 650, 550)),
    # A tall box: the square follows the longer side (120 -> 360).
    ((460, 340, 540, 460), (1000, 800), (320, 220, 680, 580)),
    # Near the top-left corner: clipped to the frame.
    ((10, 20, 110, 120), (1000, 800), (0, 0, 210, 220)),
    # Near the bottom-right corner.
    ((900, 700, 1000, 800), (1000, 800), (800, 600, 1000, 800)),
    # A face larger than the frame allows: the whole frame.
    ((100, 100, 500, 500), (600, 600), (0, 0, 600, 600)),
    # Fractional boxes (99.2 wide: a 297.6 square about 500, 400) round outwards.
    ((450.4, 350.6, 549.6, 449.4), (1000, 800), (351, 251, 649, 549)),
])
def test_the_scene_box_is_the_face_box_enlarged_about_its_centre_and_clipped(box, size, expected) -> None:  # noqa: ANN001
    assert scene_box(box, scale=3.0, width=size[0], height=size[1]) == expected


@pytest.mark.parametrize(("box", "scale", "message"), [
    ((10, 10, 5, 20), 3.0, "x2 < x1"),
    ((10, 10, 20), 3.0, "expected 4 finite numbers"),
    ((10, float("nan"), 20, 20), 3.0, "expected 4 finite numbers"),
    ((10, 10, 20, 20), 0.5, "scale must be at least 1"),
])
def test_a_bad_box_or_scale_is_refused(box, scale, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        scene_box(box, scale=scale, width=100, height=100)


def test_a_box_outside_the_frame_still_gives_a_pixel() -> None:
    left, top, right, bottom = scene_box((2000, 2000, 2010, 2010), scale=3.0, width=100, height=80)
    assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80


def test_fit_within_downscales_the_long_side_and_never_upscales() -> None:
    assert fit_within(900, 600, 320) == (320, 213)
    assert fit_within(600, 900, 320) == (213, 320)
    assert fit_within(200, 100, 320) == (200, 100)


def _photo(faces_dir: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    # obama.jpg with the face box the shared set gives for it (x, y, w, h = 349, 142, 268, 267).
    image = decode_image((faces_dir / "face_recognition/examples/knn_examples/train/obama/obama.jpg").read_bytes())
    return image, (349, 142, 349 + 268, 142 + 267)


def test_a_scene_crop_of_a_real_photo_is_a_small_jpeg_of_the_face_and_its_surroundings(faces_dir: Path) -> None:
    image, box = _photo(faces_dir)
    registry = CollectorRegistry()
    cropper = SceneCropper(scale=3.0, max_px=320, jpeg_quality=75, max_bytes=49_152, registry=registry)
    jpeg = cropper.crop(image, box)
    assert jpeg is not None and jpeg.startswith(b"\xff\xd8") and len(jpeg) <= 49_152
    crop = decode_image(jpeg)
    x1, y1, x2, y2 = scene_box(box, scale=3.0, width=image.shape[1], height=image.shape[0])
    assert max(crop.shape[:2]) == 320 and crop.shape[:2] == fit_within(x2 - x1, y2 - y1, 320)[::-1]
    # The pixels are the frame's (RGB kept, not swapped): the crop is close to the region downscaled.
    expected = cv2.resize(image[y1:y2, x1:x2], (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_AREA)
    assert float(np.abs(crop.astype(np.int16) - expected.astype(np.int16)).mean()) < 6.0
    assert registry.get_sample_value("openlfr_detect_scene_crops_total", {"outcome": "made"}) == 1.0


def test_a_crop_over_the_byte_limit_is_encoded_again_smaller_or_left_out() -> None:
    noise = np.random.default_rng(7).integers(0, 256, size=(640, 640, 3), dtype=np.uint8)
    registry = CollectorRegistry()
    # Noise at quality 95 is far over 20 KB; the fallback qualities bring it under 60 KB.
    roomy = SceneCropper(scale=3.0, max_px=256, jpeg_quality=95, max_bytes=60_000, registry=registry)
    first = cv2.imencode(".jpg", noise[:256, :256], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].size
    assert first > 60_000
    jpeg = roomy.crop(noise, (200, 200, 300, 300))
    assert jpeg is not None and len(jpeg) <= 60_000
    tight = SceneCropper(scale=3.0, max_px=256, jpeg_quality=95, max_bytes=2_000, registry=registry)
    assert tight.crop(noise, (200, 200, 300, 300)) is None
    assert registry.get_sample_value("openlfr_detect_scene_crops_total", {"outcome": "too_large"}) == 1.0


@pytest.mark.parametrize(("env", "setting"), [
    ({"OPENLFR_SCENE_CROP_SCALE": "0.5"}, "scene_crop_scale"),
    ({"OPENLFR_SCENE_CROP_MAX_PX": "20000"}, "scene_crop_max_px"),
    ({"OPENLFR_SCENE_CROP_JPEG_QUALITY": "5"}, "scene_crop_jpeg_quality"),
    ({"OPENLFR_SCENE_CROP_MAX_BYTES": "999999999"}, "scene_crop_max_bytes"),
    ({"OPENLFR_SCENE_CROP": "perhaps"}, "scene_crop"),
])
def test_bad_scene_settings_are_refused_naming_them(env: dict[str, str], setting: str, monkeypatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        SceneCropSettings()
    assert setting in str(refused.value)


def test_a_scene_byte_limit_the_faces_budget_cannot_hold_is_refused_naming_both(monkeypatch) -> None:
    from openlfr.pipeline.detect_settings import DetectSettings

    monkeypatch.setenv("OPENLFR_FACES_MESSAGE_MAX_BYTES", "150000")
    with pytest.raises(ValidationError) as refused:
        DetectSettings()
    message = str(refused.value)
    assert "OPENLFR_SCENE_CROP_MAX_BYTES=49152 leaves no room" in message
    assert "OPENLFR_FACES_MESSAGE_MAX_BYTES=150000" in message and "give at most 14196" in message
    monkeypatch.setenv("OPENLFR_SCENE_CROP_MAX_BYTES", "14196")
    assert DetectSettings().scene_crop_max_bytes == 14196
    monkeypatch.setenv("OPENLFR_SCENE_CROP_MAX_BYTES", "49152")
    monkeypatch.setenv("OPENLFR_SCENE_CROP", "false")
    assert DetectSettings().scene_cropper() is None


def test_scene_crops_are_on_by_default_and_off_gives_no_cropper(monkeypatch) -> None:
    cropper = SceneCropSettings().scene_cropper(registry=CollectorRegistry())
    assert cropper is not None and (cropper.scale, cropper.max_px) == (3.0, 320)
    monkeypatch.setenv("OPENLFR_SCENE_CROP", "false")
    assert SceneCropSettings().scene_cropper() is None
