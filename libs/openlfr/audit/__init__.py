"""The audit log: append-only, hash-chained records of every accountable change and decision."""
