"""Helpers of the cohort tests (the cohort faces themselves are ``shared_cohort_faces`` in
tests/conftest.py, which the registry tests use too)."""

from __future__ import annotations

import hashlib


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
