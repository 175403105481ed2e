package doctor

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/kernel/netlinkx"
)

// checkLeases reports invalid leases, two leases sharing a VTEP MAC or a
// public address, and the peers the backend would skip.
func (n *node) checkLeases() Result {
	res := Result{Check: "peer leases"}
	if n.cfg == nil {
		res.Status, res.Verdict = Unknown, "cannot check: no network config"
		return res
	}
	if n.storeUnread() {
		res.Status, res.Verdict = Unknown, "cannot check: the leases could not be read"
		return res
	}
	var det []string
	for _, il := range n.invalid {
		det = append(det, fmt.Sprintf("invalid lease %s: %v", il.Key, il.Err))
	}
	byIP := map[netip.Addr][]string{}
	byMAC := map[netlinkx.MAC][]string{}
	for _, l := range n.leases {
		byIP[l.Attrs.PublicIP] = append(byIP[l.Attrs.PublicIP], l.Subnet.String())
		if l.Attrs.BackendType == vxlan.TypeName && n.cfg.BackendType == vxlan.TypeName {
			if opts, err := vxlan.ParseOptions(n.cfg.Backend); err == nil {
				if mac, err := vxlan.ParseBackendData(l.Attrs.BackendData, opts.VNI); err == nil {
					byMAC[mac] = append(byMAC[mac], l.Subnet.String())
				}
			}
		}
	}
	for _, ip := range slices.SortedFunc(maps.Keys(byIP), netip.Addr.Compare) {
		if s := byIP[ip]; len(s) > 1 {
			det = append(det, fmt.Sprintf("public IP %s is advertised by %d leases: %s", ip, len(s), strings.Join(s, ", ")))
		}
	}
	for _, mac := range slices.SortedFunc(maps.Keys(byMAC), func(a, b netlinkx.MAC) int { return strings.Compare(a.String(), b.String()) }) {
		if s := byMAC[mac]; len(s) > 1 {
			det = append(det, fmt.Sprintf("VTEP MAC %s is shared by %d leases: %s", mac, len(s), strings.Join(s, ", ")))
		}
	}
	if n.plan != nil {
		for _, e := range n.plan.Skipped {
			det = append(det, e.Error())
		}
	}
	if len(det) == 0 {
		res.Status, res.Verdict = OK, fmt.Sprintf("%d leases, all valid, no VTEP MAC or public IP shared", len(n.leases))
		return res
	}
	res.Status, res.Verdict = Problem, det[0]
	res.Details = det
	res.Cause = "agents skip an invalid lease, and of two leases sharing a VTEP MAC or public IP they program one at most: the other node's pods are unreachable. Usually a cloned VM (same MAC or address), a node renamed without teardown, or a hand-written key or annotation"
	res.Fix = n.snap.LeaseFix
	return res
}
