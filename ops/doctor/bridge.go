package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// BridgeFix returns the commands that give the bridge FLANNEL_SUBNET's
// address back when it carries another one, given how many ports (pods)
// are still attached. The CNI plugin words its error with it too.
func BridgeFix(bridge string, old []string, ports int) []string {
	if ports == 0 {
		return []string{fmt.Sprintf("ip link delete %s   # no pod is attached; the next pod recreates it with FLANNEL_SUBNET's address", bridge)}
	}
	fix := []string{fmt.Sprintf("%s still attached to %s with addresses of the old subnet: drain the node (kubectl drain), then ip link delete %s", count(ports, "pod"), bridge, bridge)}
	for _, a := range old {
		fix = append(fix, fmt.Sprintf("or, keeping the bridge (its pods lose their traffic until restarted): ip addr del %s dev %s", a, bridge))
	}
	return fix
}

// bridgePorts counts the interfaces attached to the bridge.
func bridgePorts(bridge string) int {
	ents, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if err != nil {
		return 0
	}
	return len(ents)
}

// checkBridge compares cni0's IPv4 addresses with FLANNEL_SUBNET.
func (n *node) checkBridge() Result {
	res := Result{Check: "bridge address"}
	env, err := subnetenv.Read(n.o.SubnetFile)
	if err != nil {
		res.Status, res.Verdict = Unknown, "cannot check without subnet.env"
		return res
	}
	h, err := netlinkx.Open()
	if err != nil {
		res.Status, res.Verdict, res.Cause = Unknown, "cannot open netlink", err.Error()
		return res
	}
	defer h.Close()
	l, err := h.LinkByName(n.o.Bridge)
	if errors.Is(err, netlinkx.ErrNotFound) {
		res.Status, res.Verdict = OK, fmt.Sprintf("no %s yet (the first pod creates it with %s)", n.o.Bridge, env.Subnet)
		return res
	}
	if err != nil {
		res.Status, res.Verdict, res.Cause = Unknown, "cannot look up "+n.o.Bridge, err.Error()
		return res
	}
	addrs, err := h.Addrs(l.Index)
	if err != nil {
		res.Status, res.Verdict, res.Cause = Unknown, "cannot list the addresses of "+n.o.Bridge, err.Error()
		return res
	}
	var old []string
	has := false
	for _, a := range addrs {
		if !a.Addr().Is4() {
			continue
		}
		if a == env.Subnet {
			has = true
		} else {
			old = append(old, a.String())
		}
	}
	switch {
	case len(old) > 0:
		res.Status = Problem
		res.Verdict = fmt.Sprintf("%s has %s, but FLANNEL_SUBNET is %s", n.o.Bridge, strings.Join(old, ", "), env.Subnet)
		res.Cause = fmt.Sprintf("the node's subnet changed (its lease expired or etcd was reset) while %s kept the old gateway address: every new pod fails with `%s already has an IP address different from %s`", n.o.Bridge, n.o.Bridge, env.Subnet)
		res.Fix = BridgeFix(n.o.Bridge, old, bridgePorts(n.o.Bridge))
	case has:
		res.Status, res.Verdict = OK, fmt.Sprintf("%s has %s, as FLANNEL_SUBNET says", n.o.Bridge, env.Subnet)
	default:
		res.Status, res.Verdict = OK, fmt.Sprintf("%s has no IPv4 address yet (the next pod gives it %s)", n.o.Bridge, env.Subnet)
	}
	return res
}
