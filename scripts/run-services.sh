#!/usr/bin/env bash
# The pipeline as separate processes on this machine: a real Kafka broker (KRaft), the four
# consuming services, the watchlist enrolled into Qdrant's local mode, and `openlfr run --bus
# kafka` as the ingest for one source. Alerts are printed as they arrive; Ctrl-C stops all.
#
#   scripts/run-services.sh [SOURCE WATCHLIST_DIR]     (default: the built sample)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
work=${OPENLFR_RUN_DIR:-build/run}
rm -rf "$work" && mkdir -p "$work"
port=${OPENLFR_KAFKA_PORT:-19092}
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

.venv/bin/python -m openlfr.testing.kafka_broker --work-dir "$work/kafka" --port "$port" >"$work/kafka.out" 2>&1 &
pids+=($!)
for _ in $(seq 120); do grep -q ":$port" "$work/kafka.out" 2>/dev/null && break; sleep 0.5; done
grep -q ":$port" "$work/kafka.out" || { echo "the Kafka broker did not start:"; tail -20 "$work/kafka.out"; exit 1; }
export OPENLFR_BOOTSTRAP=127.0.0.1:$port OPENLFR_QDRANT_PATH=$work/qdrant \
       OPENLFR_MATCH_WATCHLIST_IDS='["default"]' OPENLFR_MAX_FRAME_AGE_S=3600 OPENLFR_HTTP_HOST=127.0.0.1

if [ $# -ge 2 ]; then source=$1; watchlist=$2; else
    .venv/bin/python - <<'PY'
from openlfr import paths
from openlfr.cli import _largest_face, samples_dir
from openlfr.config import ModelSettings
from openlfr.pipeline.samples import build_samples
from openlfr.vision.factory import build_analyzer
build_samples(samples_dir(), paths.build_dir() / "samples", locate=_largest_face(build_analyzer(ModelSettings())))
PY
    source=build/samples/walk-by.mp4; watchlist=build/samples/watchlist
fi
.venv/bin/openlfr watchlist enroll "$watchlist" --qdrant-path "$work/qdrant"

http=18081
for stage in detect embed match alert; do
    OPENLFR_HTTP_PORT=$http .venv/bin/openlfr service "$stage" >"$work/$stage.log" 2>&1 &
    pids+=($!)
    echo "service $stage: http://127.0.0.1:$http/readyz (log $work/$stage.log)"
    http=$((http + 1))
done
ready() { .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
for p in 18081 18082 18083 18084; do
    for _ in $(seq 240); do ready "http://127.0.0.1:$p/readyz" && break; sleep 0.5; done
    ready "http://127.0.0.1:$p/readyz" || { echo "service on port $p not ready; see $work/*.log"; exit 1; }
done
.venv/bin/openlfr run --bus kafka --bootstrap "$OPENLFR_BOOTSTRAP" --source "$source"
