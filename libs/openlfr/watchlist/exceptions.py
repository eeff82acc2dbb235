"""Errors of the watchlist and its vector store."""

from __future__ import annotations

from openlfr.pipeline.exceptions import BackendUnavailable


class StoreUnavailable(BackendUnavailable):
    """The vector store is down, refusing or timing out: retry the same batch later."""


class CollectionMismatch(ValueError):
    """An existing collection has another vector size or distance than the store needs."""
