"""OpenLFR: open, accountable live facial recognition."""

from __future__ import annotations

__version__ = "0.1.0"
