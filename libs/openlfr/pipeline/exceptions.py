"""Errors of pipeline stages."""

from __future__ import annotations


class BackendUnavailable(RuntimeError):
    """A backend (Triton, Qdrant) is down or timing out: retry the same batch later."""


class PoisonMessage(ValueError):
    """One input cannot be processed however often it is retried (e.g. an undecodable JPEG):
    it goes to the dead-letter topic with this reason, and the batch goes on."""
