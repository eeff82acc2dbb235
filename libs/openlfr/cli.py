"""The ``openlfr`` command line (placeholder until the subcommands are wired)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return 0
