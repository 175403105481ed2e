#!/usr/bin/env bash
# Installs, from Debian's packages, the tools Weft's lab, tests and
# benchmarks use when they are missing: iproute2 (ip, bridge), iptables,
# ping and iperf3 (nftables in a block of its own below). Sourced by
# scripts/test.sh and scripts/lab.sh.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v bridge >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "== installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	else
		echo "missing ${need[*]} and not root: install them (apt-get install ${need[*]})" >&2
	fi
fi

# --- nftables (issue 14): the nft command for weftd's nftables mode
# (EnableNFTables) and its tests (kernel/nftables), which fail without it.
if ! command -v nft >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		echo "== installing nftables"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends nftables >/dev/null; }
	else
		echo "missing nft and not root: install it (apt-get install nftables)" >&2
	fi
fi
# --- end nftables

# VXLAN devices and the bridge's netfilter hooks.
modprobe -q vxlan 2>/dev/null || true
modprobe -q br_netfilter 2>/dev/null || true
export PATH="$PATH:/usr/local/go/bin:/root/go/bin"
