"""Errors of the cohort package."""

from __future__ import annotations


class CohortError(ValueError):
    """A cohort file or request that cannot be used (the message says why and what to do)."""


class ThresholdRefused(ValueError):
    """A threshold whose expected false-alert rate exceeds what the operator accepted."""
