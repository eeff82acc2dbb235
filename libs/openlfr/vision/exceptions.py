"""Errors of the vision layer."""

from __future__ import annotations


class ImageError(ValueError):
    """An image could not be used: unreadable, corrupt, empty or out of bounds."""
