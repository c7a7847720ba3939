#!/usr/bin/env bash
# Build the real Kubernetes control plane the tests run against, once per machine:
# kube-apiserver, kube-controller-manager and kube-scheduler from Debian bookworm's source package
# `kubernetes` (1.20.5+really1.20.2, vendored), compiled with Go 1.15 from Debian bullseye, plus
# etcd from Debian's `etcd-server`. Nothing is installed system-wide: the packages are fetched with
# apt into a private apt state (its own source list, lists and cache), unpacked with dpkg-source and
# dpkg -x, and only the four binaries are kept, in $EDGEBUNDLE_KUBE_DIR (default
# ~/.cache/edgebundle/kube-1.20.2/bin). A second run with the binaries present does nothing.
# About 6 minutes on 2 cores; needs rsync and dpkg-dev (installed if missing).
set -euo pipefail
dest=${EDGEBUNDLE_KUBE_DIR:-$HOME/.cache/edgebundle/kube-1.20.2/bin}
want=(kube-apiserver kube-controller-manager kube-scheduler etcd)
have=1; for b in "${want[@]}"; do [ -x "$dest/$b" ] || have=0; done
if [ "$have" = 1 ]; then exit 0; fi

missing=""; for p in rsync dpkg-dev; do dpkg -s $p >/dev/null 2>&1 || missing="$missing $p"; done
SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edgebundle-kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$dest"
# The source lines live in a list of their own, read only by these apt calls (the machine's
# sources and lists are left as they were).
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$work/apt/sources.list" <<LIST
deb-src [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main
LIST
apt_private=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
             -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Sandbox::User=root)
cd "$work"
apt-get "${apt_private[@]}" update -qq
apt-get "${apt_private[@]}" download -qq golang-1.15-go/bullseye golang-1.15-src/bullseye etcd-server/bookworm
apt-get "${apt_private[@]}" source --download-only -qq kubernetes/bookworm >/dev/null
dpkg-source -x kubernetes_*.dsc src >/dev/null
for deb in golang-1.15-*.deb; do dpkg -x "$deb" go; done
dpkg -x etcd-server_*.deb etcd

export GOROOT="$work/go/usr/lib/go-1.15" GOPATH="$work/src/.go" GOCACHE="$work/gocache" HOME="$work/home"
export CGO_ENABLED=0 PATH="$GOROOT/bin:$PATH"
mkdir -p "$GOPATH/src/k8s.io" "$HOME"
ln -sfn ../../.. "$GOPATH/src/k8s.io/kubernetes"
cd src
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; echo "control plane build failed" >&2; exit 1; }
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  install -m 0755 "_output/bin/$b" "$dest/$b.tmp" && mv "$dest/$b.tmp" "$dest/$b"
done
install -m 0755 "$work/etcd/usr/bin/etcd" "$dest/etcd.tmp" && mv "$dest/etcd.tmp" "$dest/etcd"
echo "control plane built in $(( $(date +%s) - start )) s: $dest"
