#!/usr/bin/env bash
# podman's Docker-compatible API for Compose, on a machine without systemd:
#
#   scripts/podman-api.sh start   # the API on build/podman/docker.sock, and the health ticker
#   scripts/podman-api.sh stop
#   eval "$(scripts/podman-api.sh env)"   # DOCKER_HOST for docker compose / docker-compose
#
# Why a ticker: podman runs a container's HEALTHCHECK from a systemd timer; without systemd
# ("unable to get systemd connection to add healthchecks") no check ever runs, the health stays
# "starting", and compose's `condition: service_healthy` and `up --wait` wait for ever. The
# ticker runs `podman healthcheck run` itself: every 2 s for containers still starting (compose's
# start_interval), every 10 s for the rest (its interval). Both processes' ids are in build/podman/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

dir=$PWD/build/podman
sock=$dir/docker.sock
mkdir -p "$dir"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

tick() {
    local n=0 ids
    while true; do
        if [ $((n % 5)) -eq 0 ]; then
            ids=$(podman ps -q --filter health=starting; podman ps -q --filter health=healthy; podman ps -q --filter health=unhealthy)
        else
            ids=$(podman ps -q --filter health=starting)
        fi
        for id in $ids; do
            timeout 30 podman healthcheck run "$id" >/dev/null 2>&1 &
        done
        wait
        n=$((n + 1))
        sleep 2
    done
}

case ${1:-} in
    start)
        if ! running "$dir/service.pid"; then
            rm -f "$sock"
            podman system service --time=0 "unix://$sock" >"$dir/service.log" 2>&1 &
            echo $! > "$dir/service.pid"
            for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
            [ -S "$sock" ] || { cat "$dir/service.log" >&2; echo "podman-api: no socket at $sock" >&2; exit 1; }
        fi
        if ! running "$dir/ticker.pid"; then
            tick >"$dir/ticker.log" 2>&1 &
            echo $! > "$dir/ticker.pid"
        fi
        echo "podman-api: DOCKER_HOST=unix://$sock (service $(cat "$dir/service.pid"), health ticker $(cat "$dir/ticker.pid"))"
        ;;
    stop)
        for name in ticker service; do
            if running "$dir/$name.pid"; then
                kill "$(cat "$dir/$name.pid")"
            fi
            rm -f "$dir/$name.pid"
        done
        ;;
    env)
        echo "export DOCKER_HOST=unix://$sock"
        ;;
    *)
        echo "usage: scripts/podman-api.sh start|stop|env" >&2
        exit 2
        ;;
esac
