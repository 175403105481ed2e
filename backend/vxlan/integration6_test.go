package vxlan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/netnstest"
)

// newHosts6 is newHosts for a dual-stack (v4 true) or IPv6-only network:
// each host has 192.168.77.i/24 (dual-stack only) and 2001:db8:77::i/64 on
// the switch, and a pod holding 10.244.i.2 and fd00:10:244:i::2.
func newHosts6(t *testing.T, n int, v4 bool, backendJSON string) []*host {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	sw := netnstest.NewSwitch(t)
	js := fmt.Sprintf(dualConfig, backendJSON)
	if !v4 {
		js = fmt.Sprintf(v6Config, backendJSON)
	}
	cfg, _, err := subnet.ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	var hs []*host
	for i := 1; i <= n; i++ {
		h := &host{ns: netnstest.NewNS(t, fmt.Sprintf("h%d", i))}
		addr := netip.AddrFrom4([4]byte{192, 168, 77, byte(i)})
		addr6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:77::%d", i))
		sw.Join(t, h.ns, "eth0", netip.PrefixFrom(addr6, 64))
		sn6 := netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i))
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		h.pod = netnstest.NewNS(t, "pod")
		netnstest.NewVeth(t, h.ns, "vpod", netip.Prefix{}, h.pod, "eth0", netip.Prefix{})
		h.ns.AddAddr(t, "vpod", netip.PrefixFrom(sn6.Addr().Next(), 64))
		h.pod.AddAddr(t, "eth0", netip.PrefixFrom(sn6.Addr().Next().Next(), 64))
		h.pod.MustExec(t, "ip", "-6", "route", "add", "default", "via", sn6.Addr().Next().String())
		h.ns.EnableForwarding(t)
		h.nl = h.ns.Netlink(t)
		eth0, err := h.nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		h.ext = backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: eth0.MTU, Addr6: addr6, PublicIPv6: addr6}
		pub6 := addr6
		h.lease = subnet.Lease{IPv6Subnet: sn6, Attrs: subnet.LeaseAttrs{PublicIPv6: &pub6}}
		if v4 {
			h.ns.AddAddr(t, "eth0", netip.PrefixFrom(addr, 24))
			h.ns.AddAddr(t, "vpod", netip.PrefixFrom(sn.Addr().Next(), 24))
			h.pod.AddAddr(t, "eth0", netip.PrefixFrom(sn.Addr().Next().Next(), 24))
			h.pod.MustExec(t, "ip", "route", "add", "default", "via", sn.Addr().Next().String())
			h.ext.Addr, h.ext.PublicIP = addr, addr
			h.lease.Subnet, h.lease.Attrs.PublicIP = sn, addr
		}
		h.start(t, cfg)
		hs = append(hs, h)
	}
	return hs
}

func podAddr6(h *host) netip.Addr { return h.lease.IPv6Subnet.Addr().Next().Next() }

// checkReach6 pings every pod from every other pod over IPv6 (and IPv4
// when the hosts have it), each pair until it answers or 5 s have passed
// (the first packet to a new neighbour waits for neighbour discovery).
func checkReach6(t *testing.T, hs []*host) {
	t.Helper()
	ping := func(a *netnstest.NS, dst netip.Addr) error {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := a.Ping(dst)
			if err == nil || time.Now().After(deadline) {
				return err
			}
		}
	}
	for _, a := range hs {
		for _, b := range hs {
			if a == b {
				continue
			}
			if err := ping(a.pod, podAddr6(b)); err != nil {
				t.Errorf("pod of %s cannot reach pod %s of %s: %v", a.ns.Name, podAddr6(b), b.ns.Name, err)
			}
			if b.lease.Subnet.IsValid() {
				if err := ping(a.pod, podAddr(b)); err != nil {
					t.Errorf("pod of %s cannot reach pod %s of %s: %v", a.ns.Name, podAddr(b), b.ns.Name, err)
				}
			}
		}
	}
}

func TestIntegrationDualStack(t *testing.T) {
	hs := newHosts6(t, 3, true, `{"Type":"vxlan"}`)
	setAll(t, hs)
	checkReach6(t, hs)
	out := hs[0].ns.MustExec(t, "ip", "-d", "link", "show", "flannel-v6.1")
	for _, want := range []string{"vxlan id 1", "local 2001:db8:77::1", "dev eth0", "dstport 8472", "nolearning", "mtu 1430", hs[0].b.VtepMACv6().String()} {
		if !strings.Contains(out, want) {
			t.Errorf("flannel-v6.1 lacks %q:\n%s", want, out)
		}
	}
	routes := hs[0].ns.MustExec(t, "ip", "-6", "route", "show", "fd00:10:244:2::/64")
	if !strings.Contains(routes, "via fd00:10:244:2:: dev flannel-v6.1") || !strings.Contains(routes, "onlink") {
		t.Errorf("route to h2: %q", routes)
	}
	// A pod packet of the MTU the backend gives pods (1430) crosses the
	// IPv6 tunnel whole: 1430-40-8 bytes of ICMPv6 payload, don't fragment.
	hs[0].pod.MustExec(t, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(hs[0].b.MTU()))
	if _, err := hs[0].pod.Exec("ping", "-6", "-n", "-c1", "-W2", "-M", "do", "-s", fmt.Sprint(hs[0].b.MTU()-48), podAddr6(hs[1]).String()); err != nil {
		t.Errorf("a full-size IPv6 pod packet (MTU %d) does not cross the tunnel: %v", hs[0].b.MTU(), err)
	}
}

func TestIntegrationIPv6Only(t *testing.T) {
	hs := newHosts6(t, 3, false, `{"Type":"vxlan"}`)
	setAll(t, hs)
	checkReach6(t, hs)
	if _, err := hs[0].nl.LinkByName("flannel.1"); err == nil {
		t.Errorf("an IPv6-only network created flannel.1")
	}
}

func TestIntegrationSelfHealIPv6(t *testing.T) {
	hs := newHosts6(t, 2, true, `{"Type":"vxlan"}`)
	setAll(t, hs)
	h := hs[0]
	peerMAC := hs[1].b.VtepMACv6().String()
	has := func(args []string, want string) func() bool {
		return func() bool {
			out, _ := h.ns.Exec(args...)
			return strings.Contains(out, want)
		}
	}
	for _, tc := range []struct {
		name   string
		vandal []string
		show   []string
		want   string
	}{
		{"route", []string{"ip", "-6", "route", "del", "fd00:10:244:2::/64"}, []string{"ip", "-6", "route"}, "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1"},
		{"neigh", []string{"ip", "-6", "neigh", "del", "fd00:10:244:2::", "dev", "flannel-v6.1"}, []string{"ip", "-6", "neigh", "show", "dev", "flannel-v6.1"}, "fd00:10:244:2:: lladdr " + peerMAC + " PERMANENT"},
		{"fdb", []string{"bridge", "fdb", "del", peerMAC, "dev", "flannel-v6.1", "dst", "2001:db8:77::2"}, []string{"bridge", "fdb", "show", "dev", "flannel-v6.1"}, peerMAC + " dst 2001:db8:77::2 self permanent"},
		{"device", []string{"ip", "link", "del", "flannel-v6.1"}, []string{"ip", "-6", "route"}, "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !has(tc.show, tc.want)() {
				t.Fatalf("%s lacks %q before the test", strings.Join(tc.show, " "), tc.want)
			}
			h.ns.MustExec(t, tc.vandal...)
			heal(t, hs, h, has(tc.show, tc.want))
			checkReach6(t, hs)
		})
	}
}

func TestIntegrationDirectRoutingIPv6(t *testing.T) {
	hs := newHosts6(t, 2, true, `{"Type":"vxlan","DirectRouting":true}`)
	setAll(t, hs)
	routes := hs[0].ns.MustExec(t, "ip", "-6", "route", "show", "fd00:10:244:2::/64")
	if !strings.Contains(routes, "via 2001:db8:77::2 dev eth0") {
		t.Errorf("DirectRouting route to h2: %q", routes)
	}
	checkReach6(t, hs)
}
