"""What every pipeline service shares: base settings, health and metrics HTTP, the entry point."""
