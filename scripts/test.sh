#!/usr/bin/env bash
# Runs both test tiers; exits non-zero if either fails or if either ran no test.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "== unit tier"
.venv/bin/python -m pytest -m "not integration" tests "$@" || status=1
echo "== integration tier (real Triton server)"
.venv/bin/python -m pytest -m integration tests "$@" || status=1
exit $status
