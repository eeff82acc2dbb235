"""Errors of model loading and conversion."""

from __future__ import annotations


class ModelFormatError(ValueError):
    """A model file is not in the format its reader expects."""


class DlibFormatError(ModelFormatError):
    """A dlib-serialized file could not be parsed."""


class ModelError(ValueError):
    """A model setting or manifest that cannot be used (the message names what is wrong)."""
