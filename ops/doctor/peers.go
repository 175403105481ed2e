package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"

	"github.com/weftnet/weft/backend/hostgw"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/subnet"
)

// ProbeAddr returns the address a peer's overlay path is probed at: the
// first address of its subnet, which the vxlan backend puts on the peer's
// device; host-gw has no device, so the probe goes to the peer's bridge
// (cni0), the subnet's first usable address.
func ProbeAddr(backendType string, sn netip.Prefix) netip.Addr {
	if backendType == hostgw.TypeName {
		return sn.Addr().Next()
	}
	return sn.Addr()
}

// pingProbe runs ping(8): one echo, numeric, quiet.
func pingProbe(ctx context.Context, addr netip.Addr, timeoutSec int) bool {
	return exec.CommandContext(ctx, "ping", "-n", "-q", "-c1", "-W", strconv.Itoa(timeoutSec), addr.String()).Run() == nil
}

// checkPeers probes every peer's overlay path, 16 at a time; probes go only
// to addresses in the leases.
func (n *node) checkPeers(ctx context.Context) Result {
	res := Result{Check: "peers reachable"}
	if n.cfg == nil || n.own == nil {
		res.Status, res.Verdict = Unknown, "cannot probe without the network config and the node's lease"
		return res
	}
	peers := n.peers()
	timeout := max(1, int(n.o.ProbeTimeout.Seconds()+0.5))
	down := make([]bool, len(peers))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			down[i] = !pingProbe(ctx, ProbeAddr(n.cfg.BackendType, p.Subnet), timeout)
		})
	}
	wg.Wait()
	var bad []string
	for i, p := range peers {
		if down[i] {
			bad = append(bad, describePeer(n.cfg.BackendType, p))
		}
	}
	if len(bad) == 0 {
		res.Status, res.Verdict = OK, fmt.Sprintf("all %d peers answer through the overlay", len(peers))
		return res
	}
	res.Status = Problem
	res.Verdict = fmt.Sprintf("%d of %d peers do not answer through the overlay: %s", len(bad), len(peers), bad[0])
	res.Details = bad
	if opts, err := vxlan.ParseOptions(n.cfg.Backend); err == nil && n.cfg.BackendType == vxlan.TypeName {
		port := strconv.Itoa(opts.Port)
		res.Cause = fmt.Sprintf("no echo reply within %ds: a firewall between the nodes drops VXLAN (UDP %s), the peer is down, or the underlay's MTU is smaller than the overlay's plus 50", timeout, port)
		res.Fix = []string{fmt.Sprintf("on this node and the peer, allow VXLAN from each other: iptables -I INPUT -p udp --dport %s -s <peer public IP> -j ACCEPT", port),
			"run weft doctor --peers on the peer too: a one-way block shows on one side only"}
	} else {
		res.Cause = fmt.Sprintf("no echo reply within %ds: the peer is down, not on this L2 segment, or a firewall drops the pod network", timeout)
		res.Fix = []string{"run weft doctor on the peer; check the route: ip route get <probe address>"}
	}
	return res
}

func describePeer(backendType string, p subnet.Lease) string {
	return fmt.Sprintf("%s (public IP %s, probed at %s)", p.Subnet, p.Attrs.PublicIP, ProbeAddr(backendType, p.Subnet))
}
