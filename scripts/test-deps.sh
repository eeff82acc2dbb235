#!/usr/bin/env bash
# Idempotent: the Debian packages the test tiers need beyond the virtualenv. Today that is the
# RTSP camera served on loopback by libs/openlfr/testing/rtsp_server.py (GStreamer's RTSP server,
# run with the system python3 because PyGObject is not in the virtualenv).
# Installs only what `dpkg -s` reports missing; `apt-get update` only then. Needs root (or sudo).
#
# A fresh install on Debian 12 is ~145 packages, ~70 MB downloaded: libgstrtspserver depends on
# gstreamer1.0-plugins-bad, which brings most of them. x264enc (gstreamer1.0-plugins-ugly) adds
# only ~0.7 MB, so the camera sends H.264 as real ones do.
# The review console's browser test (tests/integration/test_review_console.py) drives Debian's
# chromium through its matching chromedriver (/usr/bin/chromium, /usr/bin/chromedriver) with
# Selenium; Selenium's own driver download is never used.
# The monitoring tests use Debian's prometheus (2.42; a 19 MB download, 96 MB installed): promtool
# checks and unit-tests deploy/prometheus, and tests/integration/test_prometheus_scrape.py runs
# its own /usr/bin/prometheus on loopback. The package enables a system service; where systemd
# runs it, it listens on :9090 and the tests do not use it.
# The images (scripts/images.sh) are built and run with root podman (Debian's 4.3, with runc as
# its runtime: deploy/podman/containers.conf), its bridge networks (netavark, which needs
# iptables) with container names in DNS (aardvark-dns, so `kafka:9092` resolves), and bases made
# by debootstrap: about 40 MB downloaded.
set -euo pipefail

packages=(
    python3-gi                 # PyGObject for the system python3
    gir1.2-gst-rtsp-server-1.0 # GstRtspServer (and, through it, the Gst and GstPbutils typelibs)
    gstreamer1.0-plugins-base  # videotestsrc, videoconvert
    gstreamer1.0-plugins-good  # rtph264pay, rtpjpegpay, jpegenc, rtpbin
    gstreamer1.0-plugins-ugly  # x264enc
    chromium                   # headless browser for the review console test
    chromium-driver            # /usr/bin/chromedriver, the same version as chromium
    prometheus                 # /usr/bin/prometheus and promtool for the monitoring tests
    podman                     # builds and runs the images (scripts/images.sh, make test-images)
    runc                       # podman's OCI runtime here
    netavark                   # podman's networks
    aardvark-dns               # names of containers in a compose network
    iptables                   # netavark's NAT and port forwarding
    debootstrap                # the Debian base images, built locally (no registry is reachable)
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: apt-get not found; install the equivalents of: ${missing[*]}" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "test-deps: missing ${missing[*]}; run this script as root" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "test-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
