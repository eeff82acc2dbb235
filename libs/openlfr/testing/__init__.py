"""Helpers that run real servers for tests, benchmarks and local set-ups (not production)."""
