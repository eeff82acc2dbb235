"""Wire contracts: one typed, versioned message per topic, and their binary-safe codec."""
