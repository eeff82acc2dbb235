"""Errors raised by inference backends."""

from __future__ import annotations


class InferenceError(RuntimeError):
    """A model call failed (backend down, timeout, bad response)."""


class ModelMismatchError(InferenceError):
    """The served model does not match what the client expects (name, dtype or shape)."""


class ModelNotBuiltError(InferenceError):
    """A model file is missing; run ``openlfr models build``."""
