#!/bin/sh
# Make (or complete) deploy/compose/kafka-credentials/: the Kafka CA, the broker's certificate for
# the names clients use (kafka inside compose, localhost for the broker's own health check) and a
# SCRAM password per user. Existing files are kept; delete one and run again to renew it
# (docs/operations.md, "Kafka security"). The directory is git-ignored.
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m openlfr.kafka.credentials deploy/compose/kafka-credentials --host kafka --host localhost "$@"
