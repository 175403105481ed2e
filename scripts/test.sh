#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: gofmt, go vet,
# staticcheck, then all tests with the race detector. It installs the Debian
# packages the tests need when they are missing (scripts/deps.sh).
#
# Privileged tests (network namespaces, netlink, iptables) are required: the
# script refuses to run unless it is root, and it sets
# WEFT_REQUIRE_PRIVILEGED=1 so that a test that cannot run fails instead of
# skipping. Any skipped test fails the run unless scripts/test-skips.txt
# names it with a reason. For a partial run without root (never CI), set
# WEFT_ALLOW_UNPRIVILEGED=1: privileged tests then skip and are listed.
#
# Extra arguments replace ./... as go test's packages (and may add flags),
# e.g. scripts/test.sh ./agent/... ./subnet/...
#
# The output ends with go test's own per-package lines (ok / FAIL), preceded
# by the number of tests run, passed, failed and skipped, and the skipped
# tests with their reasons. The exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	if [ "${WEFT_ALLOW_UNPRIVILEGED:-}" != 1 ]; then
		echo "scripts/test.sh: not root: the privileged tests (namespaces, netlink, iptables) would not run." >&2
		echo "Run it as root, as CI does, or set WEFT_ALLOW_UNPRIVILEGED=1 for a partial run that skips them." >&2
		exit 1
	fi
	echo "== WEFT_ALLOW_UNPRIVILEGED=1: privileged tests will be skipped (this run does not count as CI)"
	unset WEFT_REQUIRE_PRIVILEGED
	skips=(-allow-skips)
else
	export WEFT_REQUIRE_PRIVILEGED=1
	skips=()
fi
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

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/testsummary" ./scripts/testsummary

echo "== go test -race ${pkgs[*]}"
# -p 2: this is a 2-core machine; every package gets its own binary. The
# JSON stream is kept in $tmp/test.json while the summary reads it.
set +e
go test -race -count=1 -p 2 -timeout 25m -json "${pkgs[@]}" 2>&1 |
	tee "$tmp/test.json" |
	"$tmp/testsummary" -allowlist scripts/test-skips.txt "${skips[@]}"
status=("${PIPESTATUS[@]}")
set -e
# go test's own status counts too: the summary could miss what it did not see.
if [ "${status[0]}" != 0 ] || [ "${status[2]}" != 0 ]; then
	exit 1
fi
