#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: gofmt, go vet,
# staticcheck, then all tests with the race detector. Privileged tests
# (network namespaces, netlink, iptables) need root; CI runs as root.
# It installs the Debian packages the tests need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go tool staticcheck ./...

# --- Kubernetes control plane (kube-mode tests, test/kubetest) -----------
# Built once outside go test (never with -race) into a cache keyed by
# version; later runs reuse it in a moment. The tests read the directory
# from WEFT_KUBE_BIN_DIR.
echo "== kube-bins"
WEFT_KUBE_BIN_DIR=$(bash scripts/kube-bins.sh | tail -n 1)
export WEFT_KUBE_BIN_DIR
# --- end of the Kubernetes block -----------------------------------------

echo "== go test -race"
# -p 2: this is a 2-core machine; every package gets its own binary.
exec go test -race -count=1 -p 2 -timeout 25m ./... 
