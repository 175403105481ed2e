package vxlan

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/netnstest"
)

// host is one simulated node: a namespace on the test switch, a pod behind
// it holding <subnet>.2, and a vxlan backend programming the namespace.
type host struct {
	ns    *netnstest.NS
	pod   *netnstest.NS
	nl    *netlinkx.Handle
	ext   backend.ExternalInterface
	lease subnet.Lease
	b     *Backend
}

func podAddr(h *host) netip.Addr { return h.lease.Subnet.Addr().Next().Next() }

func newHosts(t *testing.T, n int, backendJSON string) []*host {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	sw := netnstest.NewSwitch(t)
	cfg := mustConfig(t, backendJSON)
	var hs []*host
	for i := 1; i <= n; i++ {
		h := &host{ns: netnstest.NewNS(t, fmt.Sprintf("h%d", i))}
		addr := netip.AddrFrom4([4]byte{192, 168, 77, byte(i)})
		sw.Join(t, h.ns, "eth0", netip.PrefixFrom(addr, 24))
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		h.pod = netnstest.NewPod(t, h.ns, "vpod", netip.PrefixFrom(sn.Addr().Next(), 24), netip.PrefixFrom(sn.Addr().Next().Next(), 24))
		h.nl = h.ns.Netlink(t)
		eth0, err := h.nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		h.ext = backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: eth0.MTU, Addr: addr, PublicIP: addr}
		h.lease = subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: addr}}
		h.start(t, cfg)
		hs = append(hs, h)
	}
	return hs
}

func (h *host) start(t *testing.T, cfg *subnet.Config) {
	t.Helper()
	b, err := New(context.Background(), backend.Params{Config: cfg, Ext: h.ext}, Config{Netlink: h.nl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	h.b = b
	if err := b.LeaseAttrs(&h.lease.Attrs); err != nil {
		t.Fatal(err)
	}
}

func state(hs []*host, self *host) backend.State {
	s := backend.State{Own: self.lease}
	for _, o := range hs {
		if o != self {
			s.Peers = append(s.Peers, o.lease)
		}
	}
	return s
}

func setAll(t *testing.T, hs []*host) {
	t.Helper()
	for _, h := range hs {
		if err := h.b.Set(context.Background(), state(hs, h)); err != nil {
			t.Fatalf("Set on %s: %v", h.ns.Name, err)
		}
	}
}

func checkReach(t *testing.T, hs []*host) {
	t.Helper()
	for _, a := range hs {
		for _, b := range hs {
			if a == b {
				continue
			}
			if err := a.pod.PingWithin(podAddr(b), 5*time.Second); err != nil {
				t.Errorf("pod of %s cannot reach pod %s of %s: %v", a.ns.Name, podAddr(b), b.ns.Name, err)
			}
		}
	}
}

func TestIntegrationReachability(t *testing.T) {
	hs := newHosts(t, 3, `{"Type":"vxlan"}`)
	setAll(t, hs)
	checkReach(t, hs)
	out := hs[0].ns.MustExec(t, "ip", "-d", "link", "show", "flannel.1")
	for _, want := range []string{"vxlan id 1", "local 192.168.77.1", "dev eth0", "dstport 8472", "nolearning", "mtu 1450", hs[0].b.VtepMAC().String()} {
		if !strings.Contains(out, want) {
			t.Errorf("flannel.1 lacks %q:\n%s", want, out)
		}
	}
	routes := hs[0].ns.MustExec(t, "ip", "route", "show", "10.244.2.0/24")
	if !strings.Contains(routes, "via 10.244.2.0 dev flannel.1 onlink") {
		t.Errorf("route to h2: %q", routes)
	}
}

func TestIntegrationRestartReuse(t *testing.T) {
	hs := newHosts(t, 2, `{"Type":"vxlan"}`)
	setAll(t, hs)
	before, _ := hs[0].nl.LinkByName("flannel.1")
	hs[0].b.Close()
	hs[0].start(t, mustConfig(t, `{"Type":"vxlan"}`))
	setAll(t, hs)
	after, _ := hs[0].nl.LinkByName("flannel.1")
	if after.Index != before.Index {
		t.Errorf("device recreated on restart: ifindex %d, was %d", after.Index, before.Index)
	}
	checkReach(t, hs)
}

// heal waits for Changes and calls Set until check passes.
func heal(t *testing.T, hs []*host, h *host, check func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !check() {
		select {
		case <-h.b.Changes():
		case <-deadline:
			t.Fatal("not restored within 10s")
		}
		if err := h.b.Set(context.Background(), state(hs, h)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIntegrationSelfHeal(t *testing.T) {
	hs := newHosts(t, 2, `{"Type":"vxlan"}`)
	setAll(t, hs)
	h := hs[0]
	peerMAC := hs[1].b.VtepMAC().String()
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
		{"route", []string{"ip", "route", "del", "10.244.2.0/24"}, []string{"ip", "route"}, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"},
		{"neigh", []string{"ip", "neigh", "del", "10.244.2.0", "dev", "flannel.1"}, []string{"ip", "neigh", "show", "dev", "flannel.1"}, "10.244.2.0 lladdr " + peerMAC + " PERMANENT"},
		{"fdb", []string{"bridge", "fdb", "del", peerMAC, "dev", "flannel.1", "dst", "192.168.77.2"}, []string{"bridge", "fdb", "show", "dev", "flannel.1"}, peerMAC + " dst 192.168.77.2 self permanent"},
		{"device", []string{"ip", "link", "del", "flannel.1"}, []string{"ip", "route"}, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !has(tc.show, tc.want)() {
				t.Fatalf("%s lacks %q before the test", strings.Join(tc.show, " "), tc.want)
			}
			h.ns.MustExec(t, tc.vandal...)
			heal(t, hs, h, has(tc.show, tc.want))
			checkReach(t, hs)
		})
	}
}

func TestIntegrationDirectRouting(t *testing.T) {
	hs := newHosts(t, 2, `{"Type":"vxlan","DirectRouting":true}`)
	setAll(t, hs)
	routes := hs[0].ns.MustExec(t, "ip", "route", "show", "10.244.2.0/24")
	if !strings.Contains(routes, "via 192.168.77.2 dev eth0") {
		t.Errorf("DirectRouting route to h2: %q", routes)
	}
	if out := hs[0].ns.MustExec(t, "ip", "neigh", "show", "dev", "flannel.1"); strings.TrimSpace(out) != "" {
		t.Errorf("DirectRouting left neighbours on flannel.1: %q", out)
	}
	checkReach(t, hs)
}
