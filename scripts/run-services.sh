#!/usr/bin/env bash
# The pipeline as separate processes on this machine: a real Kafka broker (KRaft), the four
# consuming services, the watchlist enrolled through the match service's registry API, a
# deployment authorising camera cam-1 for eight hours with per-subject thresholds calibrated on
# the demo's background cohort (build/cohort/default.npz, built from the shared face set; a real
# site builds its own with `openlfr cohort build DIR`), and `openlfr run --bus kafka` as the
# ingest for one source. Alerts are printed as they arrive; the operator console is at
# http://127.0.0.1:18084/console (tokens in $work/tokens.txt) and stays up after the source ends,
# so alerts can be reviewed, until Ctrl-C stops all.
#
#   scripts/run-services.sh [SOURCE WATCHLIST_DIR]     (default: the built sample)
#
# OPENLFR_RUN_DIR (build/run), OPENLFR_KAFKA_PORT (19092) and OPENLFR_RUN_HTTP_PORT (18081: detect;
# embed, match and alert on the next three ports) move it aside.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/kafka-fetch.sh  # the broker's jars (Java 17, Maven)
work=${OPENLFR_RUN_DIR:-build/run}
rm -rf "$work" && mkdir -p "$work"
port=${OPENLFR_KAFKA_PORT:-19092}
http0=${OPENLFR_RUN_HTTP_PORT:-18081}
registry_url=http://127.0.0.1:$((http0 + 2)) console_url=http://127.0.0.1:$((http0 + 3))/console
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

.venv/bin/python -m openlfr.testing.kafka_broker --work-dir "$work/kafka" --port "$port" >"$work/kafka.out" 2>&1 &
pids+=($!)
for _ in $(seq 120); do grep -q ":$port" "$work/kafka.out" 2>/dev/null && break; sleep 0.5; done
grep -q ":$port" "$work/kafka.out" || { echo "the Kafka broker did not start:"; tail -20 "$work/kafka.out"; exit 1; }
# The demo's background cohort (idempotent: kept when it is there and of the built model).
cohort=${OPENLFR_REGISTRY_COHORT:-build/cohort/default.npz}
[ -n "${OPENLFR_REGISTRY_COHORT:-}" ] || .venv/bin/openlfr cohort build --sample --out "$cohort"
export OPENLFR_BOOTSTRAP=127.0.0.1:$port OPENLFR_QDRANT_PATH=$work/vectors \
       OPENLFR_REGISTRY_DB_PATH=$work/registry.db OPENLFR_REGISTRY_COHORT=$cohort OPENLFR_REVIEW_DB_PATH=$work/review.db \
       OPENLFR_AUDIT_LOG=$work/audit.jsonl OPENLFR_MAX_FRAME_AGE_S=3600 OPENLFR_HTTP_HOST=127.0.0.1 \
       OPENLFR_REVIEW_REGISTRY_URL=$registry_url
# One random token per role, for this run only (printed to $work/tokens.txt, never logged).
eval "$(.venv/bin/python - "$work/tokens.txt" <<'PY'
import json, secrets, sys
roles = {"admin": "watchlist_admin", "authoriser": "deployment_authoriser", "reviewer-a": "reviewer",
         "reviewer-b": "reviewer", "viewer": "viewer", "alert-service": "service"}
tokens = {name: secrets.token_urlsafe(24) for name in roles}
with open(sys.argv[1], "w") as fh:
    fh.writelines(f"{name} ({roles[name]}): {token}\n" for name, token in tokens.items())
entries = [{"name": n, "roles": [roles[n]], "token": t} for n, t in tokens.items()]
print(f"export OPENLFR_API_TOKENS='{json.dumps(entries)}'")
for name in ("admin", "authoriser", "alert-service"):
    print(f"{name.upper().replace('-', '_')}_TOKEN={tokens[name]}")
PY
)"
export OPENLFR_REVIEW_REGISTRY_TOKEN=$ALERT_SERVICE_TOKEN
# match signs every match with this key, alert refuses any not signed with it (a random one per run).
export OPENLFR_MATCH_SIGNING_KEY=${OPENLFR_MATCH_SIGNING_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}
# The source file is fed faster than real time: its capture times run ahead of the clock.
export OPENLFR_MAX_CLOCK_SKEW_S=${OPENLFR_MAX_CLOCK_SKEW_S:-86400}

if [ $# -ge 2 ]; then source=$1; watchlist=$2; else
    .venv/bin/python - <<'PY'
from openlfr import paths
from openlfr.cli import samples_dir
from openlfr.run_cli import largest_face
from openlfr.config import ModelSettings
from openlfr.pipeline.samples import build_samples
from openlfr.vision.factory import build_analyzer
build_samples(samples_dir(), paths.build_dir() / "samples", locate=largest_face(build_analyzer(ModelSettings())))
PY
    source=build/samples/walk-by.mp4; watchlist=build/samples/watchlist
fi

http=$http0
for stage in detect embed match alert; do
    OPENLFR_HTTP_PORT=$http .venv/bin/openlfr service "$stage" >"$work/$stage.log" 2>&1 &
    pids+=($!)
    echo "service $stage: http://127.0.0.1:$http/readyz (log $work/$stage.log)"
    http=$((http + 1))
done
ready() { .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
p=$http0
for stage in detect embed match alert; do
    for _ in $(seq 240); do ready "http://127.0.0.1:$p/readyz" && break; sleep 0.5; done
    ready "http://127.0.0.1:$p/readyz" || {
        echo "service $stage (port $p) not ready; the end of $work/$stage.log:"; tail -5 "$work/$stage.log"; exit 1; }
    p=$((p + 1))
done
OPENLFR_TOKEN=$ADMIN_TOKEN .venv/bin/openlfr watchlist enroll "$watchlist" --api "$registry_url" \
    --reason "demonstration" --legal-basis "none: sample images, no one is sought" --source "shared face set"
OPENLFR_TOKEN=$AUTHORISER_TOKEN .venv/bin/openlfr deployment create --api "$registry_url" --id demo \
    --purpose "demonstration on the sample video" --authorised-by "demo operator" --cameras cam-1 \
    --watchlists default --start now-1m --end now+8h --target-fpir 1/6000 >/dev/null
echo "console: $console_url (tokens: $work/tokens.txt)"
.venv/bin/openlfr run --bus kafka --bootstrap "$OPENLFR_BOOTSTRAP" --source "$source" || true
reviewer_a=$(sed -n 's/^reviewer-a (reviewer): //p' "$work/tokens.txt")
reviewer_b=$(sed -n 's/^reviewer-b (reviewer): //p' "$work/tokens.txt")
cat <<MSG

The source has ended; the services stay up for review until Ctrl-C.
  console:    $console_url
  first review, paste reviewer-a's token:   $reviewer_a
  second review, paste reviewer-b's token:  $reviewer_b
  (every token and its role: $work/tokens.txt)
MSG
wait
