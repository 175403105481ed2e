#!/usr/bin/env bash
# Installs, from Debian's packages, every tool Weft's lab, tests and
# benchmarks run when it is missing, then checks that each is there. Sourced
# by scripts/test.sh and scripts/lab.sh. A fresh minimal Debian (bookworm or
# later) with Go installed is enough.
#
#   tool             package         used by
#   ip, bridge       iproute2        test/netnstest, the lab, e2e tests
#   iptables         iptables        kernel/iptables tests, the lab, weftd
#   nft              nftables        the nftables rules and their tests
#   ping             iputils-ping    reachability checks in tests and the lab
#   iperf3           iperf3          data-plane benchmarks
#   make             make            `make` builds; the Dockerfile test runs make -n
#   gcc (+ libc)     gcc, libc6-dev  cgo, which -race needs (tests and the
#                                    race-built programs they start)
#   systemd-analyze  systemd         dist's unit file test
#   git              git             gofmt's file list in scripts/test.sh
#   modprobe         kmod            loading vxlan and br_netfilter below
#   podman           podman          cmd/weftd TestE2EPodman (Debian's 4.x,
#                                    CNI network backend)
#   runc             runc            podman's OCI runtime (crun refuses this
#                                    machine's hybrid cgroup layout)
#   /bin/busybox     busybox-static  the test image's rootfs (statically linked)
# Nothing shells out to sysctl(8): tests write /proc/sys inside their
# namespaces.
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want ip iproute2
want bridge iproute2
want iptables iptables
want nft nftables
want ping iputils-ping
want iperf3 iperf3
want make make
want gcc gcc
want systemd-analyze systemd
want git git
want modprobe kmod
want podman podman
want runc runc
# cgo needs the C library headers as well as the compiler.
[ -e /usr/include/stdlib.h ] || need+=(libc6-dev)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	if [ "$(id -u)" = 0 ]; then
		echo "== installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
		still=()
		for t in ip bridge iptables nft ping iperf3 make gcc systemd-analyze git modprobe podman runc; do
			command -v "$t" >/dev/null 2>&1 || still+=("$t")
		done
		if [ ${#still[@]} -gt 0 ]; then
			echo "scripts/deps.sh: still missing after apt-get install: ${still[*]}" >&2
			exit 1
		fi
	else
		echo "missing ${need[*]} and not root: install them (apt-get install ${need[*]})" >&2
	fi
fi
# VXLAN devices and the bridge's netfilter hooks.
modprobe -q vxlan 2>/dev/null || true
modprobe -q br_netfilter 2>/dev/null || true
export PATH="$PATH:/usr/local/go/bin:/root/go/bin"
