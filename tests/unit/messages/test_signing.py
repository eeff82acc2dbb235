"""Signed match records: what is signed, what breaks a signature, the key's settings."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from openlfr.messages.codec import DecodeError, decode, encode
from openlfr.messages.models import MATCH_SCHEMA_VERSION, Match
from openlfr.messages.signing import UNSIGNED, MatchSigner, SigningSettings, canonical_bytes
from openlfr.service.settings import settings_error_lines

KEY = "3f1c0e9a7b5d4c2e8f6a1b3d5c7e9f0a"
SIGNER = MatchSigner(KEY)


def _match(**changes: object) -> Match:
    fields: dict[str, object] = dict(
        camera_id="cam-1", frame_id="f-1", capture_ts=1_700_000_000.25, trace_id="trace-0001", track_id="cam-1:f-1:0",
        subject_id="s-1", watchlist_id="wl", score=0.81, margin=0.12, votes=3, track_frames=7, threshold=0.705,
        first_seen_ts=1_699_999_999.0, probe_chip_jpeg=b"\xff\xd8\xff\xe0probe", reference_image_id="ref-1",
        embedder_model="dlib_resnet_v1", deployment_id="dep-1", reference_chip_jpeg=b"\xff\xd8\xff\xe0ref",
        normalised_score=4.2, normalised_threshold=3.1, cohort="cohort@abc",
    )
    return SIGNER.build(**{**fields, **changes})


def test_a_signed_match_verifies_after_the_wire_whatever_its_json_layout() -> None:
    match = _match()
    assert match.v == MATCH_SCHEMA_VERSION == 3 and match.sig != UNSIGNED and SIGNER.verify(match)
    assert decode(encode(match), Match) == match and SIGNER.verify(decode(encode(match), Match))
    # Another producer's JSON: other key order, spaces, the same record: the same signature holds.
    reordered = json.dumps(dict(reversed(list(json.loads(encode(match)).items()))), indent=2).encode()
    assert SIGNER.verify(decode(reordered, Match))
    assert canonical_bytes(match).startswith(b"openlfr.matches/v2\x00{")


@pytest.mark.parametrize(
    ("field", "value"),
    [("camera_id", "cam-2"), ("capture_ts", 1_700_000_000.26), ("subject_id", "s-2"), ("deployment_id", "dep-2"),
     ("threshold", 0.1), ("score", 0.99), ("probe_chip_jpeg", b"\xff\xd8\xff\xe0other"), ("cohort", None),
     ("normalised_threshold", 0.0), ("lateness_s", 3.0), ("scene_jpeg", b"\xff\xd8\xff\xe0scene")],
)
def test_changing_any_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = _match().model_copy(update={field: value})
    assert not SIGNER.verify(tampered)


def test_a_scene_crop_is_signed_and_a_schema_2_record_written_without_one_still_verifies() -> None:
    import hashlib
    import hmac

    with_scene = _match(scene_jpeg=b"\xff\xd8\xff\xe0scene")
    assert SIGNER.verify(decode(encode(with_scene), Match))
    assert not SIGNER.verify(with_scene.model_copy(update={"scene_jpeg": b"\xff\xd8\xff\xe0other"}))
    assert not SIGNER.verify(with_scene.model_copy(update={"scene_jpeg": None}))
    # A record as the schema-2 match stage wrote and signed it: no scene_jpeg key at all.
    record = json.loads(encode(_match()))
    record.update(v=2)
    del record["sig"], record["scene_jpeg"]
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    record["sig"] = hmac.new(KEY.encode(), b"openlfr.matches/v2\x00" + body, hashlib.sha256).hexdigest()
    old = decode(json.dumps(record).encode(), Match)
    assert old.v == 2 and old.scene_jpeg is None and SIGNER.verify(old)
    # Schema 2 has no scene crop: one that says v 2 and carries one is refused.
    record["scene_jpeg"] = "/9j/4A=="
    with pytest.raises(DecodeError, match="scene_jpeg needs schema version 3"):
        decode(json.dumps(record).encode(), Match)


def test_another_key_does_not_verify_and_a_previous_one_does() -> None:
    match = _match()
    assert not MatchSigner("b" * 8 + KEY).verify(match)
    assert MatchSigner("b" * 8 + KEY, previous=[KEY]).verify(match)
    assert not MatchSigner("b" * 8 + KEY, previous=[KEY]).verify(match.model_copy(update={"sig": UNSIGNED}))


def test_an_unsigned_version_1_match_is_not_a_match() -> None:
    v1 = json.loads(encode(_match()))
    del v1["sig"]
    v1["v"] = 1
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(v1).encode(), Match)
    assert "v: Input should be 2" in str(info.value) and "sig: Field required" in str(info.value)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "bad setting OPENLFR_MATCH_SIGNING_KEY: Field required"),
        ({"OPENLFR_MATCH_SIGNING_KEY": "short"}, "bad setting OPENLFR_MATCH_SIGNING_KEY: "
                                                 "OPENLFR_MATCH_SIGNING_KEY must be at least 32 characters"),
        ({"OPENLFR_MATCH_SIGNING_KEY": "CHANGE-ME-" * 4}, "is a placeholder"),
        ({"OPENLFR_MATCH_SIGNING_KEY": KEY, "OPENLFR_MATCH_SIGNING_KEY_PREVIOUS": "x" * 40},
         "bad setting OPENLFR_MATCH_SIGNING_KEY_PREVIOUS: "
         "OPENLFR_MATCH_SIGNING_KEY_PREVIOUS is a placeholder"),
    ],
)
def test_a_missing_or_weak_key_stops_the_service_naming_the_setting(monkeypatch, env, complaint) -> None:
    monkeypatch.delenv("OPENLFR_MATCH_SIGNING_KEY", raising=False)
    monkeypatch.delenv("OPENLFR_MATCH_SIGNING_KEY_PREVIOUS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        SigningSettings()
    lines = settings_error_lines(info.value, prefix="OPENLFR_MATCH_")
    assert any(complaint in line for line in lines), lines


def test_the_key_is_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("OPENLFR_MATCH_SIGNING_KEY", KEY)
    settings = SigningSettings()
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    assert KEY not in repr(settings.signer())
    assert settings.signer().verify(_match())
