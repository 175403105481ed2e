#!/usr/bin/env bash
# Weft's benchmark suite. As root, from anywhere in the checkout:
#
#   bash bench/run.sh                 # every section (about 10-15 minutes)
#   bash bench/run.sh convergence     # only the named sections
#
# Sections: labup dataplane convergence cni restart scale components.
#
# For a smoke run that must not replace the committed figures:
#
#   BENCHTIME=1x BENCH_OUT=/tmp/bench BENCH_RESULTS=/tmp/bench/RESULTS.md \
#     bash bench/run.sh scale components cni
#
# BENCHTIME replaces the -benchtime of every `go test -bench` (the lab
# sections keep their repetitions); BENCH_OUT and BENCH_RESULTS move the raw
# outputs and the table; BENCH_STATE_DIR and BENCH_PREFIX give the lab
# sections a state dir and name prefix of their own (default /run/weft-bench
# and wbench), so that two runs on one machine do not take each other's labs
# down.
# It builds everything (make), installs iperf3 from Debian if missing, writes
# each section's raw output to bench/out/ (go-*.txt from `go test -bench`,
# lab-*.json from bench/cmd/weftbench), then regenerates bench/RESULTS.md
# from everything in bench/out/ with bench/cmd/benchreport. The labs it
# brings up use their own prefix and state dir and are taken down on exit,
# also on failure or Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-bench/out}
RESULTS=${BENCH_RESULTS:-bench/RESULTS.md}
BENCHTIME=${BENCHTIME:-}
STATE_DIR=${BENCH_STATE_DIR:-/run/weft-bench}
PREFIX=${BENCH_PREFIX:-wbench}
ALL=(labup dataplane convergence cni restart scale components)

cleanup() {
	[ -x bin/weft ] && bin/weft lab down --state-dir "$STATE_DIR" --prefix "$PREFIX" >/dev/null 2>&1
	true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
	echo "bench/run.sh: run it as root (it makes network namespaces)" >&2
	exit 1
fi
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=("${ALL[@]}")
for s in "${sections[@]}"; do
	case " ${ALL[*]} " in *" $s "*) ;; *) echo "bench/run.sh: unknown section $s (want: ${ALL[*]})" >&2; exit 2 ;; esac
done

set -e
make
command -v iperf3 >/dev/null || { apt-get update -qq && apt-get install -y -qq iperf3; }
mkdir -p "$OUT"
go build -o "$OUT/weftbench" ./bench/cmd/weftbench
"$OUT/weftbench" -out "$OUT" machine
cleanup # a lab left by an earlier, killed run
set +e

# gobench NAME ARGS...: runs `go test ARGS` into $OUT/go-NAME.txt, the first
# line naming the command. With BENCHTIME set, it replaces ARGS' -benchtime.
gobench() {
	local name=$1 shown="go test" a skip=
	shift
	if [ -n "$BENCHTIME" ]; then
		local args=(-benchtime "$BENCHTIME")
		for a in "$@"; do
			if [ -n "$skip" ]; then skip=; continue; fi
			case $a in -benchtime) skip=1 ;; -benchtime=*) ;; *) args+=("$a") ;; esac
		done
		set -- "${args[@]}"
	fi
	for a in "$@"; do
		case $a in *[!A-Za-z0-9_./=-]*) shown+=" '$a'" ;; *) shown+=" $a" ;; esac
	done
	echo "== $shown"
	{ echo "# command: $shown"; go test "$@" 2>&1; } > "$OUT/go-$name.txt"
	local rc=$?
	grep -E '^(Benchmark|--- FAIL|FAIL)' "$OUT/go-$name.txt"
	return $rc
}

weftbench() {
	echo "== weftbench $1"
	"$OUT/weftbench" -out "$OUT" -state-dir "$STATE_DIR" -prefix "$PREFIX" "$1"
}

failed=()
for s in "${sections[@]}"; do
	case $s in
	scale) gobench weftd -run '^$' -bench . -benchtime 3x ./cmd/weftd/ && weftbench idle ;;
	components)
		gobench vxlan -run '^$' -bench . -benchtime 3x ./backend/vxlan/ &&
			gobench etcd -run '^$' -bench . ./subnet/etcd/ ;;
	cni) gobench cni -run '^$' -bench 'AddDel|ExecFloor' -benchtime 100x ./cniplugin/ && weftbench cni ;;
	*) weftbench "$s" ;;
	esac || failed+=("$s")
done

go run ./bench/cmd/benchreport -in "$OUT" -out "$RESULTS" || failed+=(report)
echo "wrote $RESULTS"
if [ ${#failed[@]} -gt 0 ]; then
	echo "bench/run.sh: failed sections: ${failed[*]} (their raw output is in $OUT/)" >&2
	exit 1
fi
