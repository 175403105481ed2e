#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: gofmt, go vet,
# staticcheck, then all tests with the race detector. Privileged tests
# (network namespaces, netlink, iptables) need root; CI runs as root.
# It installs the Debian packages the tests need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v bridge >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "== installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	else
		echo "missing ${need[*]} and not root: privileged tests will be skipped" >&2
	fi
fi
# Tests add and remove netfilter state; make sure the modules are there.
modprobe -q vxlan 2>/dev/null || true
modprobe -q br_netfilter 2>/dev/null || true

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go tool staticcheck ./...

echo "== go test -race"
# -p 2: this is a 2-core machine; every package gets its own binary.
exec go test -race -count=1 -p 2 -timeout 25m ./... 
