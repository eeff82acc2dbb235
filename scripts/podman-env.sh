# Sourced (not run) by scripts/images.sh and the image test: podman configured for this kind of
# machine from the repository's own file, never from anything set up by hand.
#   CONTAINERS_CONF  deploy/podman/containers.conf (runc, cgroupfs, no default ulimits)
# Needs Debian's podman and runc (scripts/test-deps.sh installs them) and root.
_openlfr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF="$_openlfr_root/deploy/podman/containers.conf"
unset _openlfr_root
for _tool in podman runc; do
    if ! command -v "$_tool" >/dev/null 2>&1; then
        echo "podman-env: '$_tool' is not on PATH (scripts/test-deps.sh installs Debian's podman and runc)" >&2
        return 1 2>/dev/null || exit 1
    fi
done
unset _tool
if [ "$(id -u)" -ne 0 ]; then
    echo "podman-env: the images are built and run with root podman here; run as root" >&2
    return 1 2>/dev/null || exit 1
fi
