#!/usr/bin/env bash
# Builds OpenLFR's images on this machine with podman, pulling nothing from a container registry
# (none is reachable here): the base images come from Debian packages (debootstrap, then
# `podman import`), the rest from the repository's Dockerfiles with those bases as build arguments.
#
#   scripts/images.sh [base|openlfr|kafka|triton|all]      (default: all)
#
#   localhost/openlfr-base/python:3.11-bookworm  Debian 12 minbase + python3.11 and venv; stands in
#                                                for python:3.11-slim (the Dockerfile's default)
#   localhost/openlfr-base/java:17-bookworm      Debian 12 minbase + OpenJDK 17 JRE headless
#   localhost/openlfr/openlfr:0.1.0              Dockerfile, target runtime (the five services)
#   localhost/openlfr/triton:0.1.0-pytriton      Dockerfile, target triton-cpu: the nvidia-pytriton
#                                                wheel's tritonserver on the CPU over the python
#                                                repository variant (NVIDIA's image is out of reach)
#   localhost/openlfr/kafka:4.3.1                deploy/kafka/Dockerfile over build/kafka/libs: the
#                                                jars scripts/kafka-fetch.sh gives the tests
#   localhost/openlfr/prometheus:bookworm        Debian 12 minbase + Debian's prometheus (2.42, the
#                                                one the monitoring tests run), wget for its check
#
# Cached: a base is rebuilt only when its inputs (suite, mirror, packages, set-up) change (a hash
# in its label); podman reuses the Dockerfiles' layers (and pip's cache mount, where the network's
# answers are cacheable: behind this machine's proxy they are not, docs/operations.md). Each build's time and each image's size are printed and appended to
# build/images/builds.log. Needs root, podman, runc and debootstrap (scripts/test-deps.sh) and
# the network to Debian and PyPI. docs/operations.md, "Images with podman".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

VERSION=$(sed -n 's/^version: *//p' deploy/services.yaml)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)
SUITE=bookworm
MIRROR=${OPENLFR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON_BASE=localhost/openlfr-base/python:3.11-$SUITE
JAVA_BASE=localhost/openlfr-base/java:17-$SUITE
PROMETHEUS_IMAGE=localhost/openlfr/prometheus:$SUITE
OPENLFR_IMAGE=localhost/openlfr/openlfr:$VERSION
OPENLFR_BUILD_STAGE=localhost/openlfr/openlfr-build:$VERSION
KAFKA_IMAGE=localhost/openlfr/kafka:$KAFKA_VERSION
TRITON_IMAGE=localhost/openlfr/triton:$VERSION-pytriton
TRITON_VENV_STAGE=localhost/openlfr/triton-cpu-venv:$VERSION
LOG=build/images/builds.log
mkdir -p build/images

# The few CPU cores here are shared: builds run niced.
NICE=(nice -n "${OPENLFR_IMAGES_NICE:-10}")

log() { echo "images: $*"; }

record() {  # record IMAGE SECONDS
    local size
    size=$(podman image inspect --format '{{.Size}}' "$1")
    log "$1: $(numfmt --to=iec "$size") ($size bytes), built in ${2}s"
    printf '%s %s size_bytes=%s build_s=%s\n' "$(date -u +%FT%TZ)" "$1" "$size" "$2" >> "$LOG"
}

# base IMAGE PACKAGES SETUP [CHANGE...]: a Debian minbase root filesystem with PACKAGES, SETUP run
# in it (chroot, /bin/sh -e), imported as IMAGE with the Dockerfile instructions CHANGE; skipped
# when IMAGE exists with the same inputs.
base() {
    local image=$1 packages=$2 setup=$3
    shift 3
    local changes=() change inputs
    for change in "$@"; do changes+=(--change "$change"); done
    inputs=$(printf '%s\n' "$SUITE" "$MIRROR" "$packages" "$setup" "$@" | sha256sum | cut -c1-16)
    if podman image exists "$image" \
        && [ "$(podman image inspect --format '{{index .Labels "org.openlfr.base.inputs"}}' "$image")" = "$inputs" ]; then
        log "$image up to date (inputs $inputs)"
        return
    fi
    command -v debootstrap >/dev/null || { echo "images: debootstrap not on PATH (scripts/test-deps.sh)" >&2; exit 1; }
    local rootfs started
    rootfs=build/images/rootfs-$(echo "$image" | tr '/:' '__')
    started=$(date +%s)
    rm -rf "$rootfs"
    log "$image: debootstrap $SUITE ($packages)"
    if ! "${NICE[@]}" debootstrap --variant=minbase --include="$packages" "$SUITE" "$rootfs" "$MIRROR" \
        > "$rootfs.log" 2>&1; then
        tail -n 20 "$rootfs.log" >&2
        [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
        echo "images: debootstrap failed (log: $rootfs.log)" >&2
        exit 1
    fi
    chroot "$rootfs" /bin/sh -ec "$setup"
    # What python:3.11-slim and debian:bookworm-slim leave out too: package lists and caches.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
        "$rootfs"/debootstrap
    # Into a file first: a failed tar must not leave an imported, empty image.
    tar --numeric-owner -C "$rootfs" -cf "$rootfs.tar" .
    podman import \
        --change "LABEL org.openlfr.base.inputs=$inputs" \
        --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase + $packages" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        "${changes[@]}" \
        "$rootfs.tar" "$image" >/dev/null
    rm -rf "$rootfs" "$rootfs.log" "$rootfs.tar"
    record "$image" $(( $(date +%s) - started ))
}

bases() {
    # python3.11-venv depends on python3.11-distutils, which only python3-distutils provides:
    # debootstrap does not resolve virtual packages, so it is named.
    base "$PYTHON_BASE" \
        python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates \
        'ln -sf /usr/bin/python3.11 /usr/local/bin/python; ln -sf /usr/bin/python3.11 /usr/local/bin/python3'
    # No /proc in the chroot, so java cannot run there (it finds libjli.so through /proc/self/exe).
    base "$JAVA_BASE" openjdk-17-jre-headless,ca-certificates 'test -x "$(readlink -f /usr/bin/java)"'
    # Prometheus as Debian packages it, run as its package's user; /prometheus (the compose
    # volume's mount point) owned by that user, so a new volume starts writable.
    base "$PROMETHEUS_IMAGE" prometheus,wget \
        'mkdir -p /prometheus && chown prometheus:prometheus /prometheus && test -x /usr/bin/prometheus' \
        'USER prometheus' 'WORKDIR /prometheus' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

# build IMAGE ARGS...: podman build, never pulling, with the layer cache.
build() {
    local image=$1 started
    shift
    started=$(date +%s)
    log "$image: podman build $*"
    "${NICE[@]}" podman build --pull=never --layers --format docker --tag "$image" "$@" .
    record "$image" $(( $(date +%s) - started ))
}

# The Dockerfile's arguments: the python base, and pip inside the build trusting what pip here
# trusts ($PIP_CERT: a TLS-intercepting proxy's CA); an empty secret when unset, which the
# Dockerfile reads as "pip's own bundle".
DOCKERFILE_ARGS=(--file Dockerfile --build-arg "PYTHON_IMAGE=$PYTHON_BASE" --secret "id=pip-cert,src=${PIP_CERT:-/dev/null}")

build_stage() {
    # The build stage (the models, for both images below) tagged too: untagged, the prune below
    # would take it, and the layer cache of its slow steps (the pip installs) with it.
    build "$OPENLFR_BUILD_STAGE" "${DOCKERFILE_ARGS[@]}" --target build
}

openlfr() {
    build "$OPENLFR_IMAGE" "${DOCKERFILE_ARGS[@]}" --target runtime
}

triton() {
    # Its pip stage tagged for the same reason as the build stage.
    build "$TRITON_VENV_STAGE" "${DOCKERFILE_ARGS[@]}" --target triton-cpu-venv
    build "$TRITON_IMAGE" "${DOCKERFILE_ARGS[@]}" --target triton-cpu
}

kafka() {
    scripts/kafka-fetch.sh
    build "$KAFKA_IMAGE" --file deploy/kafka/Dockerfile --build-arg "JAVA_IMAGE=$JAVA_BASE"
}

what=${1:-all}
case $what in
    base) bases ;;
    openlfr) bases; build_stage; openlfr ;;
    kafka) bases; kafka ;;
    triton) bases; build_stage; triton ;;
    all) bases; build_stage; openlfr; kafka; triton ;;
    *) echo "images: unknown image set '$what' (base, openlfr, kafka, triton or all)" >&2; exit 2 ;;
esac
# Layers a rebuild replaced: untagged images no tagged one is built on (the cache stays).
podman image prune --force >/dev/null
