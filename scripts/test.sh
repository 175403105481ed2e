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

echo "== go test -race"
# -p 2: this is a 2-core machine; every package gets its own binary.
exec go test -race -count=1 -p 2 -timeout 25m ./... 
