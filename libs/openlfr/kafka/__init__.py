"""Kafka helpers shared by the services: topic administration, the consume loop."""
