#!/usr/bin/env bash
# Pushes the OCI image layouts of `make oci` (target/oci/<module>/) to a
# registry with skopeo, digests unchanged, and prints what to put in a
# WasmPlugin (url, sha256) or an EnvoyExtensionPolicy (image.url, sha256).
#   scripts/oci-push.sh REGISTRY [skopeo copy flags...]
# OCI_DIR: where the layouts are (default target/oci).
set -euo pipefail
cd "$(dirname "$0")/.."
registry="${1:?usage: scripts/oci-push.sh REGISTRY [skopeo flags]}"
shift
for layout in "${OCI_DIR:-target/oci}"/*/; do
    layout="${layout%/}"
    module="$(basename "$layout")"
    for tag in $(python3 -c 'import json,sys; print(" ".join(m["annotations"]["org.opencontainers.image.ref.name"] for m in json.load(open(sys.argv[1]))["manifests"]))' "$layout/index.json"); do
        skopeo copy --quiet --preserve-digests "$@" "oci:$layout:$tag" "docker://$registry/$module:$tag"
        digest="$(python3 -c 'import json,sys; print(next(m["digest"] for m in json.load(open(sys.argv[1]))["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"]==sys.argv[2]))' "$layout/index.json" "$tag")"
        echo "$registry/$module:$tag  sha256: ${digest#sha256:}  (oci://$registry/$module@$digest)"
    done
done
