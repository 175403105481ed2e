package hostgw

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/netnstest"
)

func TestIntegrationHostGW(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	sw := netnstest.NewSwitch(t)
	type host struct {
		ns, pod *netnstest.NS
		b       *Backend
		lease   subnet.Lease
	}
	var hs []*host
	for i := 1; i <= 3; i++ {
		h := &host{ns: netnstest.NewNS(t, fmt.Sprintf("g%d", i))}
		addr := netip.AddrFrom4([4]byte{192, 168, 78, byte(i)})
		sw.Join(t, h.ns, "eth0", netip.PrefixFrom(addr, 24))
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		h.pod = netnstest.NewPod(t, h.ns, "vpod", netip.PrefixFrom(sn.Addr().Next(), 24), netip.PrefixFrom(sn.Addr().Next().Next(), 24))
		nl := h.ns.Netlink(t)
		eth0, err := nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: eth0.MTU, Addr: addr, PublicIP: addr}
		h.b, err = New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: nl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.b.Close() })
		h.lease = subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: addr}}
		if err := h.b.LeaseAttrs(&h.lease.Attrs); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	// A peer on another segment, which host-gw cannot reach.
	far := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("172.16.0.9"), BackendType: TypeName}}
	for _, h := range hs {
		s := backend.State{Own: h.lease, Peers: []subnet.Lease{far}}
		for _, o := range hs {
			if o != h {
				s.Peers = append(s.Peers, o.lease)
			}
		}
		err := h.b.Set(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), "10.244.9.0-24") || !strings.Contains(err.Error(), "not on a directly connected subnet") {
			t.Errorf("Set on %s with an off-link peer: error %v", h.ns.Name, err)
		}
	}
	for _, a := range hs {
		for _, b := range hs {
			if a == b {
				continue
			}
			dst := b.lease.Subnet.Addr().Next().Next()
			if err := a.pod.PingWithin(dst, 5*time.Second); err != nil {
				t.Errorf("pod of %s cannot reach %s: %v", a.ns.Name, dst, err)
			}
		}
	}
	out := hs[0].ns.MustExec(t, "ip", "route")
	if !strings.Contains(out, "10.244.2.0/24 via 192.168.78.2 dev eth0") || strings.Contains(out, "10.244.9.0") {
		t.Errorf("routes on g1:\n%s", out)
	}
}
