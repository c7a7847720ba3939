#!/usr/bin/env bash
# make demo: the whole job on the built-in example, on loopback only.
# build host: source registry -> keygen -> lock -> create -> verify -> inspect (and its SBOM)
# then examples/demo-site.sh: field media, and the install at a loopback edge site
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
OUT=$ROOT/demo-out
source examples/registry.sh

rm -rf "$OUT"; mkdir -p "$OUT"
SRC_PORT=$(free_port)
trap 'for r in source site depot site-b; do stop_registry "$OUT/$r-registry" 2>/dev/null || true; done' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build host: start a loopback source registry on 127.0.0.1:$SRC_PORT"
start_registry source "$SRC_PORT" "$OUT/source-registry"

step "push the example images (built locally, multi-layer OCI, one multi-arch)"
$BIN/python examples/images.py --registry "127.0.0.1:$SRC_PORT"

step "the spec: examples/rag-edge/bundle.yaml, pointed at this registry and the real models"
mkdir -p "$OUT/spec"
cp -r examples/rag-edge/. "$OUT/spec/"
rm -rf "$OUT/spec/models"
ln -s "$ROOT/.cache/models" "$OUT/spec/models"
sed -i "s#127.0.0.1:5000#127.0.0.1:$SRC_PORT#; s#\.\./\.\./manifests/#$ROOT/manifests/#" "$OUT/spec/bundle.yaml"
rm -f "$OUT/spec/bundles.lock"

step "bundle keygen release"
$BIN/bundle keygen release --out "$OUT/keys"

step "bundle lock"
$BIN/bundle lock "$OUT/spec/bundle.yaml"

step "bundle create (signed, compressed where it pays)"
/usr/bin/time -f "create: %e s wall, peak RSS %M KiB" \
  $BIN/bundle create "$OUT/spec/bundle.yaml" --key "$OUT/keys/release.key" -o "$OUT/rag-edge-1.0.0.tar"

step "bundle verify"
$BIN/bundle verify "$OUT/rag-edge-1.0.0.tar" --pubkey "$OUT/keys/release.pub"

step "skopeo reads the bundle as an OCI archive"
skopeo inspect --format 'rag/llm-service:1.0 {{.Digest}} {{.Os}}/{{.Architecture}}, {{len .Layers}} layers' "oci-archive:$OUT/rag-edge-1.0.0.tar:rag/llm-service:1.0"

step "bundle inspect"
$BIN/bundle inspect "$OUT/rag-edge-1.0.0.tar"

step "bundle inspect --sbom (the signed CycloneDX 1.6 SBOM, to $OUT/sbom.cdx.json; the summary below)"
$BIN/bundle inspect "$OUT/rag-edge-1.0.0.tar" --sbom --pubkey "$OUT/keys/release.pub" > "$OUT/sbom.cdx.json"

if [ -f examples/demo-site.sh ]; then source examples/demo-site.sh; fi
step "demo finished in ${SECONDS} s: everything it made is under $OUT"
