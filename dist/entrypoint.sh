#!/bin/bash
# Weft's container entrypoint: make the image's iptables speak the same
# backend (legacy or nft) as the host's, then run weftd with our arguments.
#
# Rules written through one backend are invisible to the other, so weftd must
# use whichever one kubelet and kube-proxy already use on this host. As
# kube-proxy's images do, look first for the chains kubelet creates as a hint
# (KUBE-IPTABLES-HINT, or KUBE-KUBELET-CANARY on older kubelets) and
# otherwise count the rules each backend holds; the busier one wins, nft on a
# tie. WEFT_IPTABLES_MODE=legacy|nft overrides the guess.
set -euo pipefail

# has_hint MODE: does the mangle table seen through MODE hold kubelet's hint?
has_hint() {
	local save
	for save in "iptables-$1-save" "ip6tables-$1-save"; do
		if "$save" -t mangle 2>/dev/null | grep -qE '^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) '; then
			return 0
		fi
	done
	return 1
}

# rule_count MODE: how many rules the host holds through MODE, both families.
rule_count() {
	{ "iptables-$1-save" 2>/dev/null || true; "ip6tables-$1-save" 2>/dev/null || true; } | grep -c '^-' || true
}

detect_mode() {
	if has_hint nft; then
		echo nft
	elif has_hint legacy; then
		echo legacy
	elif [ "$(rule_count legacy)" -gt "$(rule_count nft)" ]; then
		echo legacy
	else
		echo nft
	fi
}

mode="${WEFT_IPTABLES_MODE:-}"
if [ -z "$mode" ]; then
	mode="$(detect_mode)"
fi
case "$mode" in
legacy | nft) ;;
*)
	echo "weft-entrypoint: WEFT_IPTABLES_MODE=$mode: want legacy or nft" >&2
	exit 2
	;;
esac

update-alternatives --set iptables "/usr/sbin/iptables-$mode" >/dev/null
update-alternatives --set ip6tables "/usr/sbin/ip6tables-$mode" >/dev/null
echo "weft-entrypoint: using iptables-$mode" >&2

exec /usr/local/bin/weftd "$@"
