package labbench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/ops/lab"
)

// The hand-made VXLAN floor: a VXLAN path that DataPlane builds with `ip`
// alone between the same two lab hosts that carry Weft's flannel.<VNI>,
// on the same underlay (each host's eth0, a veth into the lab's bridge),
// with no agent involved. It mirrors what backend/vxlan programs for a
// peer — a device with a local address and nolearning, the peer's
// <subnet>.0 as an onlink route, a permanent neighbour entry and an fdb
// entry — but with the kernel's defaults for every option the agent could
// set. Its pod-like half mirrors the CNI attachment: a bridge with the
// subnet's .1, a veth pair with the overlay's MTU, and a namespace holding
// .2 with a default route through the bridge.
//
// The hand-made host-gw floor is the same pod-like half on each host (its
// veth at the underlay's MTU, as host-gw advertises), with the peer's
// subnet routed through the peer's underlay address: what backend/hostgw
// programs, and no device at all.
//
// Everything it adds lives inside the lab's host namespaces, or in
// namespaces named like the lab's pods (pod number 0, which the lab never
// uses), so `weft lab down` removes it even after a crash.
const (
	floorVNI  = 4242
	floorPort = 4789
	floorDev  = "floorvx"
	floorBr   = "floorbr"
	floorVeth = "floorveth"
)

// floorSubnet is host i's (1-based) subnet on the hand-made path: apart
// from any lab network, and only ever routed inside the lab's namespaces.
func floorSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(i), 0}), 24)
}

// floorPodNS is the namespace of host h's pod-like end.
func floorPodNS(h lab.Host) string { return h.NS + "-pod0" }

// floorCommand is the shape of the hand-made device, as the results show it.
func floorCommand(h lab.Host) string {
	return fmt.Sprintf("ip -n %s link add %s type vxlan id %d dstport %d local %s dev eth0 nolearning (bench/labbench/floor.go)",
		h.NS, floorDev, floorVNI, floorPort, h.Addr)
}

// floor is the hand-made path between two lab hosts.
type floor struct {
	// dev is host 2's address on its device (<subnet>.0), the target of
	// the host-to-host leg; pod is host 2's pod-like address (.2).
	dev, pod netip.Addr
	// podNS is host 1's pod-like namespace, the pod leg's client.
	podNS string
	// serverNS is host 2's pod-like namespace, where the pod leg's
	// server runs.
	serverNS string
}

// floorDevSteps returns the `ip` argv (without "ip") that build host i's
// (1-based) half of the hand-made path: its device (vxlan only) and its
// pod-like hops. They come before the peer entries (floorPeerSteps), which
// need the other half's device MAC.
func floorDevSteps(i int, h lab.Host, hostgw bool) [][]string {
	sub := floorSubnet(i)
	devAddr := sub.Addr()
	brAddr := devAddr.Next()
	podAddr := brAddr.Next()
	pod := floorPodNS(h)
	// The veth at the overlay's MTU: the VXLAN device's, 50 below the
	// underlay's, or the underlay's for host-gw.
	mtu := "1450"
	var steps [][]string
	if hostgw {
		mtu = "1500"
	} else {
		steps = [][]string{
			{"-n", h.NS, "link", "add", floorDev, "type", "vxlan", "id", fmt.Sprint(floorVNI), "dstport", fmt.Sprint(floorPort),
				"local", h.Addr.String(), "dev", "eth0", "nolearning"},
			{"-n", h.NS, "addr", "add", netip.PrefixFrom(devAddr, 32).String(), "dev", floorDev},
			{"-n", h.NS, "link", "set", floorDev, "up"},
		}
	}
	return append(steps, [][]string{
		// The pod-like hops: bridge (cni0), veth pair, pod namespace.
		{"netns", "add", pod},
		{"-n", h.NS, "link", "add", floorBr, "type", "bridge"},
		{"-n", h.NS, "addr", "add", netip.PrefixFrom(brAddr, sub.Bits()).String(), "dev", floorBr},
		{"-n", h.NS, "link", "set", floorBr, "up"},
		{"-n", h.NS, "link", "add", floorVeth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", pod},
		{"-n", h.NS, "link", "set", floorVeth, "master", floorBr, "up"},
		{"-n", pod, "link", "set", "lo", "up"},
		{"-n", pod, "addr", "add", netip.PrefixFrom(podAddr, sub.Bits()).String(), "dev", "eth0"},
		{"-n", pod, "link", "set", "eth0", "up"},
		{"-n", pod, "route", "add", "default", "via", brAddr.String()},
	}...)
}

// floorPeerSteps are host h's entries for peer j (1-based) whose device
// has the MAC mac: the neighbour and route that backend/vxlan programs for
// a lease (the fdb entry is buildFloor's, with the bridge tool).
func floorPeerSteps(h lab.Host, j int, mac string) [][]string {
	gw := floorSubnet(j).Addr()
	return [][]string{
		{"-n", h.NS, "neigh", "replace", gw.String(), "lladdr", mac, "dev", floorDev, "nud", "permanent"},
		{"-n", h.NS, "route", "add", floorSubnet(j).String(), "via", gw.String(), "dev", floorDev, "onlink"},
	}
}

// floorHostGWCommand is the shape of the hand-made host-gw path.
func floorHostGWCommand(h lab.Host, peer lab.Host) string {
	return fmt.Sprintf("ip -n %s route add %s via %s dev eth0, to a bridge and veth made by hand (bench/labbench/floor.go)",
		h.NS, floorSubnet(2), peer.Addr)
}

// buildFloor builds the hand-made path between h1 and h2: VXLAN, or with
// hostgw the routed one. On failure it removes what it made; on success
// the caller removes it with dropFloor.
func (b *Bench) buildFloor(ctx context.Context, h1, h2 lab.Host, hostgw bool) (*floor, error) {
	hosts := []lab.Host{h1, h2}
	fail := func(err error) (*floor, error) {
		b.dropFloor(h1, h2)
		return nil, fmt.Errorf("building the hand-made floor: %w", err)
	}
	for i, h := range hosts {
		for _, s := range floorDevSteps(i+1, h, hostgw) {
			if _, err := run(ctx, append([]string{"ip"}, s...)...); err != nil {
				return fail(err)
			}
		}
	}
	dev2 := floorSubnet(2).Addr()
	fl := &floor{dev: dev2, pod: dev2.Next().Next(), podNS: floorPodNS(h1), serverNS: floorPodNS(h2)}
	if hostgw {
		for i, h := range hosts {
			j := 1 - i
			if _, err := run(ctx, "ip", "-n", h.NS, "route", "add", floorSubnet(j+1).String(), "via", hosts[j].Addr.String(), "dev", "eth0"); err != nil {
				return fail(err)
			}
		}
		return fl, nil
	}
	macs := make([]string, 2)
	for i, h := range hosts {
		out, err := run(ctx, "ip", "netns", "exec", h.NS, "cat", "/sys/class/net/"+floorDev+"/address")
		if err != nil {
			return fail(err)
		}
		macs[i] = strings.TrimSpace(out)
	}
	for i, h := range hosts {
		j := 1 - i
		steps := floorPeerSteps(h, j+1, macs[j])
		for _, s := range steps {
			if _, err := run(ctx, append([]string{"ip"}, s...)...); err != nil {
				return fail(err)
			}
		}
		// The fdb entry is the bridge tool's.
		if _, err := run(ctx, "bridge", "-n", h.NS, "fdb", "append", macs[j], "dev", floorDev,
			"dst", hosts[j].Addr.String(), "self", "permanent"); err != nil {
			return fail(err)
		}
	}
	return fl, nil
}

// dropFloor removes the hand-made path, best-effort: the veth pairs and
// the pod-like namespaces, then the devices and routes in the hosts.
func (b *Bench) dropFloor(h1, h2 lab.Host) {
	for _, h := range []lab.Host{h1, h2} {
		// The veth first, which takes its pod end with it at once: a
		// namespace's links go only when the kernel's cleanup of the
		// deleted namespace has run, some time after `ip netns del`.
		_, _ = run(context.Background(), "ip", "-n", h.NS, "link", "del", floorVeth)
		_, _ = run(context.Background(), "ip", "netns", "del", floorPodNS(h))
		_, _ = run(context.Background(), "ip", "-n", h.NS, "link", "del", floorDev)
		_, _ = run(context.Background(), "ip", "-n", h.NS, "link", "del", floorBr)
		for j := 1; j <= 2; j++ {
			_, _ = run(context.Background(), "ip", "-n", h.NS, "route", "del", floorSubnet(j).String())
		}
	}
}
