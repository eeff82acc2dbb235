"""The streaming pipeline's stages as pure handlers, runnable over Kafka or in-process."""
