"""Accuracy measurement: verification (1:1) figures now, identification and groups later."""
