# make demo, second half: carry the bundle to an edge site and install it, all on loopback.
# Sourced by examples/demo.sh after the build steps; uses its ROOT, BIN, OUT, step and the
# registry helpers, and relies on its trap to stop "$OUT/site-registry".
#   depot: split -> write-media (the "USB stick" is $OUT/media)
#   site:  verify -> load -> stage -> status -> plan -> approve -> apply -> history -> audit
#   then:  release 1.0.1 as a delta against 1.0.0, `installer install`, `installer rollback`
#   fleet: `bundle push` to a depot registry, a second site installs straight from it, `bundle pull`
# The site is real parts standing in for hardware: a second docker-registry process is the site
# registry, a directory is the NAS mount, another is k3s's auto-deploy manifests directory.

SITE_DIR=$OUT/site
SITE=$SITE_DIR/site.yaml
MEDIA=$OUT/media
K3S=$SITE_DIR/k3s-manifests
RENDERED=$K3S/edgebundle-plant-7.yaml   # apply writes <manifestsDir>/edgebundle-<site name>.yaml
SITE_PORT=$(free_port)
export EDGEBUNDLE_OPERATOR=demo           # who the audit log records for verbs without --operator

timed() {  # timed LABEL CMD...: run CMD, then print its wall time and peak RSS
  local label=$1; shift
  /usr/bin/time -f "$label: %e s wall, peak RSS %M KiB" "$@"
}

fold_wheels() {  # write-media lists every wheel it carries; show them as one line (a FAILED one stays)
  awk 'function summary() { if (n && !shown) printf "  ok      wheelhouse/ (%d wheels of the offline installer)\n", n; if (n) shown = 1 }
       /^  ok +wheelhouse\// { n++; next }
       { summary(); print }
       END { summary() }'
}

step "depot: bundle split into 64 MiB parts (a real stick takes the default, fat32: 4 GiB - 1)"
$BIN/bundle split "$OUT/rag-edge-1.0.0.tar" --size 64MiB --key "$OUT/keys/release.key" -o "$OUT/parts"

step "depot: bundle write-media to the 'USB stick' $MEDIA, every file read back from it"
mkdir -p "$MEDIA"
PY_VERSION=$($BIN/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
media_args=("$OUT/parts" "$MEDIA" --pubkey "$OUT/keys/release.pub" --site-file "$SITE" --mount-point "$MEDIA")
# The offline installer (for this machine and Python: the technician's laptop) is built from
# .cache/wheelhouse, which `make install` fills (examples/fetch_wheels.py); only a cache miss goes
# to the package index. With neither, the stick is written without the installer.
if ! timed write-media $BIN/bundle write-media "${media_args[@]}" \
    --target-platform "manylinux2014_$(uname -m)" --python-version "$PY_VERSION" \
    --wheel-cache "$ROOT/.cache/wheelhouse" 2>&1 | fold_wheels; then
  echo "(no wheels for the offline installer: the package index is unreachable and .cache/wheelhouse"
  echo " lacks them; writing the stick with --no-wheels, so on site edgebundle must be installed already)"
  timed write-media $BIN/bundle write-media "${media_args[@]}" --no-wheels
fi

step "site: registry on 127.0.0.1:$SITE_PORT, NAS mount, k3s manifests directory, site.yaml"
start_registry site "$SITE_PORT" "$OUT/site-registry"
mkdir -p "$SITE_DIR/keys" "$SITE_DIR/nas" "$K3S"
cp "$OUT/keys/release.pub" "$SITE_DIR/keys/"   # the site's trust store, delivered apart from the stick
sed -e '/^ *#/d' \
    -e "s#10\.0\.0\.2:5000#127.0.0.1:$SITE_PORT#" \
    -e "s#/mnt/nas/models#$SITE_DIR/nas#" \
    -e "s#/var/lib/edgebundle#$SITE_DIR/state#" \
    -e "s#/var/lib/rancher/k3s/server/manifests#$K3S#" \
    examples/rag-edge/site.yaml > "$SITE"
if grep -nE '10\.0\.0\.2|/mnt/|/var/lib/' "$SITE"; then
  echo "demo: examples/rag-edge/site.yaml changed: the lines above still point outside $OUT" >&2
  exit 1
fi
cat "$SITE"

cd "$SITE_DIR"   # the technician's working directory: plan files go here, never onto the stick

step "installer verify \$MEDIA (the parts against their signed index, then every blob)"
timed verify $BIN/installer verify "$MEDIA" --site "$SITE"

step "installer load: images -> site registry, digests preserved"
timed load $BIN/installer load "$MEDIA" --site "$SITE"

step "installer stage: models -> NAS, one directory per model version"
timed stage $BIN/installer stage "$MEDIA" --site "$SITE"

step "installer status"
$BIN/installer status --site "$SITE"

step "installer status --sbom: the installed bundle's SBOM, proven against its signed root"
$BIN/installer status --site "$SITE" --sbom > "$OUT/site-sbom.cdx.json"
cmp "$OUT/sbom.cdx.json" "$OUT/site-sbom.cdx.json" && echo "the site's SBOM is the build host's ($(wc -c < "$OUT/site-sbom.cdx.json") bytes)"

step "installer plan (exit 3: changes pending)"
$BIN/installer plan "$MEDIA" --site "$SITE" -o plan.json || [ $? -eq 3 ]

step "installer approve (it shows the plan again; only its verdict is kept here)"
$BIN/installer approve plan.json --operator demo --yes | tail -n 1

step "installer apply"
timed apply $BIN/installer apply plan.json --site "$SITE"

step "installer history"
$BIN/installer history --site "$SITE"

step "installer audit verify / show"
$BIN/installer audit verify --site "$SITE"
$BIN/installer audit show --site "$SITE"

step "what k3s will apply: images pinned by digest in the site registry, versioned /models paths"
ls -l "$K3S"
grep -nE 'image: |value: /models/|server: |path: /export' "$RENDERED"
echo "chat-ui, rendered by Helm's engine from the chart (site value: memory limit 384Mi):"
grep -nE 'memory: 384Mi|image: .*/rag/chat-ui' "$RENDERED" || true

step "skopeo inspect the pinned llm-service image in the site registry"
PINNED=$(grep -m1 -oE "127\.0\.0\.1:$SITE_PORT/rag/llm-service@sha256:[0-9a-f]{64}" "$RENDERED")
skopeo inspect --tls-verify=false \
  --format '{{.Name}}@{{.Digest}} {{.Os}}/{{.Architecture}}, {{len .Layers}} layers' "docker://$PINNED"

step "build host: release 1.0.1 (the chat-ui chart's bundle values: 2 replicas) as a delta against 1.0.0"
SPEC2=$OUT/spec-1.0.1
mkdir -p "$SPEC2"
cp -r "$OUT/spec/." "$SPEC2/"
rm -f "$SPEC2/bundles.lock"
sed -i "s#^  version: 1\.0\.0\$#  version: 1.0.1#; s#values: {replicaCount: 1}#values: {replicaCount: 2}#" "$SPEC2/bundle.yaml"
if ! grep -q '^  version: 1\.0\.1$' "$SPEC2/bundle.yaml" || ! grep -q 'values: {replicaCount: 2}' "$SPEC2/bundle.yaml"; then
  echo "demo: could not make release 1.0.1 from examples/rag-edge/bundle.yaml" >&2
  exit 1
fi
$BIN/bundle lock "$SPEC2/bundle.yaml" >/dev/null
# create --base explains each blob on stderr; keep that in a log and count the decisions
if ! $BIN/bundle create "$SPEC2/bundle.yaml" --key "$OUT/keys/release.key" \
    -o "$OUT/rag-edge-1.0.1-delta.tar" --base "$OUT/rag-edge-1.0.0.tar" 2>"$OUT/delta-1.0.1.log"; then
  cat "$OUT/delta-1.0.1.log" >&2
  exit 1
fi
awk '$1 == "base" {b++} $1 == "patch" {p++} $1 == "whole" {w++}
     END {printf "blobs: %d rebuilt from what the site has, %d patched, %d carried whole (details: delta-1.0.1.log)\n", b, p, w}' \
  "$OUT/delta-1.0.1.log"
du -h --apparent-size "$OUT/rag-edge-1.0.0.tar" "$OUT/rag-edge-1.0.1-delta.tar"

step "site: installer install the delta (verify, load, stage, plan, approve, apply in one verb)"
timed install $BIN/installer install "$OUT/rag-edge-1.0.1-delta.tar" --site "$SITE" --operator demo --yes

step "installer rollback: back to 1.0.0's objects (nothing reloaded or restaged), a new revision"
$BIN/installer rollback --site "$SITE" --operator demo --yes

step "installer history, and the audit log still verifies"
$BIN/installer history --site "$SITE"
$BIN/installer audit verify --site "$SITE"

DEPOT_PORT=$(free_port)
step "fleet: a depot registry on 127.0.0.1:$DEPOT_PORT; bundle push 1.0.0 and the 1.0.1 delta to it"
DEPOT=127.0.0.1:$DEPOT_PORT
start_registry depot "$DEPOT_PORT" "$OUT/depot-registry"
$BIN/bundle push "$OUT/rag-edge-1.0.0.tar" "oci://$DEPOT/rag/edge:1.0.0"
$BIN/bundle push "$OUT/rag-edge-1.0.1-delta.tar" "oci://$DEPOT/rag/edge:1.0.1-delta"
$BIN/bundle push "$OUT/rag-edge-1.0.0.tar" "oci://$DEPOT/rag/edge:1.0.0"   # again: nothing to send

step "fleet: a second site (plant-8, its own registry, NAS and k3s dir) installs 1.0.0 from the depot"
SITE_B_DIR=$OUT/site-b
SITE_B=$SITE_B_DIR/site.yaml
SITE_B_PORT=$(free_port)
start_registry site-b "$SITE_B_PORT" "$OUT/site-b-registry"
mkdir -p "$SITE_B_DIR/nas" "$SITE_B_DIR/k3s-manifests" "$SITE_B_DIR/keys"
cp "$SITE_DIR/keys/release.pub" "$SITE_B_DIR/keys/"   # the same trusted key as plant-7
sed -e "s#127\.0\.0\.1:$SITE_PORT#127.0.0.1:$SITE_B_PORT#" -e "s#$SITE_DIR/#$SITE_B_DIR/#g" \
    -e "s#name: plant-7}#name: plant-8}#" "$SITE" > "$SITE_B"
timed install-from-depot $BIN/installer install "oci://$DEPOT/rag/edge:1.0.0" --site "$SITE_B" --operator demo --yes

step "fleet: bundle pull gives back the very bytes that were pushed"
$BIN/bundle pull "oci://$DEPOT/rag/edge:1.0.0" -o "$OUT/pulled-1.0.0.tar" --pubkey "$OUT/keys/release.pub"
cmp "$OUT/rag-edge-1.0.0.tar" "$OUT/pulled-1.0.0.tar" && echo "identical to rag-edge-1.0.0.tar"
cd "$ROOT"
