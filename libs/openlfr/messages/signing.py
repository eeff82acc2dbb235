"""Match records signed by the match stage, so the alert stage acts only on matches it made.

The matches topic is the last step before a person is put up for review: a record written there
by anyone else (a process on the broker's network, a compromised service) must not become an
alert. The match stage signs every ``Match`` (schema v2) with HMAC-SHA256 under a secret shared
with the alert stage (``OPENLFR_MATCH_SIGNING_KEY``); the alert stage dead-letters a match whose
``sig`` does not verify.

What is signed (``canonical_bytes``): the domain ``openlfr.matches/v2``, a NUL, then the record's
fields other than ``sig`` (and ``scene_jpeg`` while it is null: schema 2 has no such field) as
JSON with sorted keys, no spaces, ASCII only, bytes as base64 (exactly what
``model_dump(mode="json")`` gives). Every field is covered, the camera, capture time, subject,
deployment, threshold, both chips and the scene crop included, and the encoding does not depend on
the order or spacing of the JSON on the wire. A replayed genuine record gets the alert id it had
(the alert stage drops it as a duplicate).

Rotation: set the new key as ``OPENLFR_MATCH_SIGNING_KEY`` and the old one as
``OPENLFR_MATCH_SIGNING_KEY_PREVIOUS`` on the alert service first (it accepts both), then the new
key on the match service; once the matches signed with the old key are consumed, drop the
previous key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.messages.models import Match

SIGNING_KEY_SETTING = "OPENLFR_MATCH_SIGNING_KEY"
#: The shortest key accepted, in characters (``openssl rand -hex 32`` gives 64).
MIN_KEY_CHARS = 32
#: Domain separation: a signature over another kind of record never verifies as a match's.
DOMAIN = b"openlfr.matches/v2\x00"
#: ``sig`` of a record not yet signed (never verifies: HMAC output is not all zeros in practice).
UNSIGNED = "0" * 64


def _check_key(value: SecretStr | None, name: str) -> SecretStr | None:
    if value is None:
        return None
    text = value.get_secret_value()
    if len(text) < MIN_KEY_CHARS:
        raise ValueError(
            f"{name} must be at least {MIN_KEY_CHARS} characters of a random secret "
            f"(got {len(text)}); make one with: openssl rand -hex 32"
        )
    if len(set(text)) < 8 or "CHANGE-ME" in text.upper():
        raise ValueError(f"{name} is a placeholder, not a random secret; make one with: openssl rand -hex 32")
    return value


class SigningSettings(BaseSettings):
    """The match records' signing key (env ``OPENLFR_MATCH_SIGNING_KEY``), read by the match
    service (signs) and the alert service (verifies). No default: both refuse to start without it."""

    model_config = SettingsConfigDict(env_prefix="OPENLFR_MATCH_", frozen=True, extra="ignore")

    #: The shared secret, at least 32 characters (``openssl rand -hex 32``).
    signing_key: SecretStr = Field(repr=False)
    #: The key before the last rotation, accepted by the alert stage while old records drain.
    signing_key_previous: SecretStr | None = Field(default=None, repr=False)

    @field_validator("signing_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        return _check_key(value, SIGNING_KEY_SETTING)  # type: ignore[return-value]

    @field_validator("signing_key_previous")
    @classmethod
    def _previous(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_key(value, SIGNING_KEY_SETTING + "_PREVIOUS")

    def signer(self) -> MatchSigner:
        """The signer (and verifier) of these keys."""
        previous = [self.signing_key_previous.get_secret_value()] if self.signing_key_previous is not None else []
        return MatchSigner(self.signing_key.get_secret_value(), previous=previous)


def canonical_bytes(match: Match) -> bytes:
    """The bytes a match's signature is computed over (see the module's docstring)."""
    # A field added after schema 2 is left out while empty, so a v2 record (written without it)
    # is signed and verified over the same bytes as before.
    empty_later = {"scene_jpeg"} if match.scene_jpeg is None else set()
    fields: dict[str, Any] = match.model_dump(mode="json", exclude={"sig", *empty_later})
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DOMAIN + body.encode("ascii")


class MatchSigner:
    """Signs matches with a key, and verifies them against it and any previous keys.

    Args:
        key: the current key (text; its UTF-8 bytes are the HMAC key).
        previous: keys still accepted when verifying (rotation), never used to sign.
    """

    def __init__(self, key: str, *, previous: Sequence[str] = ()) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"MatchSigner.key: expected at least {MIN_KEY_CHARS} characters, got {len(key)}")
        self._key = key.encode("utf-8")
        self._accepted = [self._key, *(k.encode("utf-8") for k in previous)]

    def __repr__(self) -> str:
        return f"MatchSigner(keys={len(self._accepted)})"

    @classmethod
    def ephemeral(cls) -> MatchSigner:
        """A signer with a random key, for a run whose stages share one process (``openlfr run``)."""
        return cls(secrets.token_hex(32))

    @staticmethod
    def _mac(key: bytes, match: Match) -> str:
        return hmac.new(key, canonical_bytes(match), hashlib.sha256).hexdigest()

    def sign(self, match: Match) -> Match:
        """The match with its ``sig``."""
        return match.model_copy(update={"sig": self._mac(self._key, match)})

    def build(self, **fields: Any) -> Match:
        """A validated, signed ``Match`` of ``fields`` (all but ``sig``)."""
        return self.sign(Match(**fields, sig=UNSIGNED))

    def verify(self, match: Match) -> bool:
        """Whether ``match.sig`` is the signature of its record under an accepted key."""
        return any(hmac.compare_digest(self._mac(key, match), match.sig) for key in self._accepted)
