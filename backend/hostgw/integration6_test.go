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

// TestIntegrationHostGWIPv6: dual-stack and IPv6-only host-gw between
// namespaces on one switch: pods reach each other over both families, and a
// deleted IPv6 route comes back.
func TestIntegrationHostGWIPv6(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, v4 := range []bool{true, false} {
		t.Run(map[bool]string{true: "dual", false: "v6only"}[v4], func(t *testing.T) {
			js := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`
			if !v4 {
				js = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`
			}
			cfg, _, err := subnet.ParseConfig([]byte(js))
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
				addr6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:78::%d", i))
				sw.Join(t, h.ns, "eth0", netip.PrefixFrom(addr6, 64))
				sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
				sn6 := netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i))
				h.pod = netnstest.NewNS(t, "pod")
				netnstest.NewVeth(t, h.ns, "vpod", netip.Prefix{}, h.pod, "eth0", netip.Prefix{})
				h.ns.AddAddr(t, "vpod", netip.PrefixFrom(sn6.Addr().Next(), 64))
				h.pod.AddAddr(t, "eth0", netip.PrefixFrom(sn6.Addr().Next().Next(), 64))
				h.pod.MustExec(t, "ip", "-6", "route", "add", "default", "via", sn6.Addr().Next().String())
				h.ns.EnableForwarding(t)
				nl := h.ns.Netlink(t)
				eth0, err := nl.LinkByName("eth0")
				if err != nil {
					t.Fatal(err)
				}
				ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: eth0.MTU, Addr6: addr6, PublicIPv6: addr6}
				pub6 := addr6
				h.lease = subnet.Lease{IPv6Subnet: sn6, Attrs: subnet.LeaseAttrs{PublicIPv6: &pub6}}
				if v4 {
					h.ns.AddAddr(t, "eth0", netip.PrefixFrom(addr, 24))
					h.ns.AddAddr(t, "vpod", netip.PrefixFrom(sn.Addr().Next(), 24))
					h.pod.AddAddr(t, "eth0", netip.PrefixFrom(sn.Addr().Next().Next(), 24))
					h.pod.MustExec(t, "ip", "route", "add", "default", "via", sn.Addr().Next().String())
					ext.Addr, ext.PublicIP = addr, addr
					h.lease.Subnet, h.lease.Attrs.PublicIP = sn, addr
				}
				h.b, err = New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: nl})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { h.b.Close() })
				if err := h.b.LeaseAttrs(&h.lease.Attrs); err != nil {
					t.Fatal(err)
				}
				hs = append(hs, h)
			}
			state := func(h *host) backend.State {
				s := backend.State{Own: h.lease}
				for _, o := range hs {
					if o != h {
						s.Peers = append(s.Peers, o.lease)
					}
				}
				return s
			}
			for _, h := range hs {
				if err := h.b.Set(context.Background(), state(h)); err != nil {
					t.Fatal(err)
				}
			}
			reach := func() {
				for _, a := range hs {
					for _, b := range hs {
						if a == b {
							continue
						}
						dsts := []netip.Addr{b.lease.IPv6Subnet.Addr().Next().Next()}
						if v4 {
							dsts = append(dsts, b.lease.Subnet.Addr().Next().Next())
						}
						for _, dst := range dsts {
							if err := a.pod.PingWithin(dst, 5*time.Second); err != nil {
								t.Errorf("pod of %s cannot reach %s: %v", a.ns.Name, dst, err)
							}
						}
					}
				}
			}
			reach()
			out := hs[0].ns.MustExec(t, "ip", "-6", "route")
			if !strings.Contains(out, "fd00:10:244:2::/64 via 2001:db8:78::2 dev eth0") {
				t.Fatalf("IPv6 routes on g1:\n%s", out)
			}
			hs[0].ns.MustExec(t, "ip", "-6", "route", "del", "fd00:10:244:2::/64")
			h := hs[0]
			for {
				out, _ := h.ns.Exec("ip", "-6", "route")
				if strings.Contains(out, "fd00:10:244:2::/64 via 2001:db8:78::2 dev eth0") {
					break
				}
				<-h.b.Changes() // the test's deadline bounds the wait
				if err := h.b.Set(context.Background(), state(h)); err != nil {
					t.Fatal(err)
				}
			}
			reach()
		})
	}
}
