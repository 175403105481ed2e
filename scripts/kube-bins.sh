#!/usr/bin/env bash
# Builds the Kubernetes control plane the Kubernetes-mode tests and
# `weft lab up --kube` run (kube-apiserver, kube-controller-manager) from the
# tools module in tools/kube, once, into a cache outside the clone keyed by the
# Kubernetes version, the Go version and the tools module's go.sum. Later runs
# reuse it. Never built with -race: instrumenting the system under test only
# slows it.
#
# Prints the directory holding the two binaries on its last line of stdout.
# Progress goes to stderr. The first build takes several minutes on 2 cores.
#
#   WEFT_KUBE_CACHE   cache root (default /var/cache/weft/kube)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mod="$top/tools/kube"
cache_root=${WEFT_KUBE_CACHE:-/var/cache/weft/kube}

kver=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3} $1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$mod/go.mod")
[ -n "$kver" ] || { echo "kube-bins: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
gover=$(go env GOVERSION)
sum=$(sha256sum "$mod/go.sum" | cut -c1-12)
dir="$cache_root/$kver-$gover-$sum"

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kube-controller-manager" ]; then
	echo "kube-bins: using $dir" >&2
	echo "$dir"
	exit 0
fi

echo "kube-bins: building kube-apiserver and kube-controller-manager $kver with $gover into $dir" >&2
echo "kube-bins: the first build takes several minutes on 2 cores; progress every 30 s" >&2
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
log="$tmp/build.log"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
(
	cd "$mod"
	# -v names each package as it is compiled: the count is the progress.
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -ldflags=-s -o "$tmp/" ./cmd/kube-apiserver ./cmd/kube-controller-manager
) >"$log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
	for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	kill -0 "$pid" 2>/dev/null && echo "kube-bins: $(( $(date +%s) - start )) s, $(grep -vc '^go: ' "$log") packages compiled" >&2
done
if ! wait "$pid"; then
	echo "kube-bins: build failed; last lines of the log:" >&2
	tail -n 30 "$log" >&2
	exit 1
fi
# Move into place only when both are built, so a half build is never used.
rm -rf "$dir"
mkdir -p "$dir.tmp"
mv "$tmp/kube-apiserver" "$tmp/kube-controller-manager" "$dir.tmp/"
mv "$dir.tmp" "$dir"
echo "kube-bins: built in $(( $(date +%s) - start )) s" >&2
echo "$dir"
