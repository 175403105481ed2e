#!/usr/bin/env bash
# The main job: on a fresh Debian machine, as root, with Go installed,
# install what the lab needs, build every binary (make), and start a local
# overlay cluster of three hosts with two pods each: an embedded etcd, a real
# weftd per host, pods attached through the real flannel CNI plugin. Extra
# arguments go to `weft lab up` (e.g. --hosts 5 --backend host-gw).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
make
exec ./bin/weft lab up "$@"
