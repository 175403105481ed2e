#!/usr/bin/env bash
# Installs, from Debian's packages, the tools Weft's lab, tests and
# benchmarks use when they are missing: iproute2 (ip, bridge), iptables,
# ping and iperf3; and podman, runc and busybox-static (see the podman
# block below). Sourced by scripts/test.sh and scripts/lab.sh.
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
# VXLAN devices and the bridge's netfilter hooks.
modprobe -q vxlan 2>/dev/null || true
modprobe -q br_netfilter 2>/dev/null || true

# --- podman: cmd/weftd's TestE2EPodman runs containers through the flannel
# plugin with Debian's podman (4.3, CNI network backend), runc (crun refuses
# this machine's hybrid cgroup layout) and an image made from a statically
# linked busybox. The test fails without them; it is never skipped.
podman_need=()
command -v podman >/dev/null 2>&1 || podman_need+=(podman)
command -v runc >/dev/null 2>&1 || podman_need+=(runc)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || podman_need+=(busybox-static)
if [ ${#podman_need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "== installing ${podman_need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends "${podman_need[@]}" >/dev/null ||
			{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${podman_need[@]}" >/dev/null; }
	else
		echo "missing ${podman_need[*]} and not root: install them (apt-get install --no-install-recommends ${podman_need[*]})" >&2
	fi
fi
# --- end podman

export PATH="$PATH:/usr/local/go/bin:/root/go/bin"
