package hostgw

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
)

// TestDualStackRoutes: each family's route to each peer via its public
// address of that family; an IPv4-only peer gets its IPv4 route only; an
// IPv6 part that cannot be reached is skipped and named, its IPv4 route
// kept; IPv6-only programs IPv6 only.
func TestDualStackRoutes(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []string
		absent       []string
	}{
		{"dual", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`,
			[]string{"route 10.244.2.0/24 via 192.168.0.102 dev eth0", "route fd00:10:244:2::/64 via 2001:db8::102 dev eth0",
				"route 10.244.3.0/24 via 192.168.0.103 dev eth0", "route 10.244.4.0/24 via 192.168.0.104 dev eth0"},
			[]string{"fd00:10:244:3::", "fd00:10:244:4::"}},
		{"v6only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`,
			[]string{"route fd00:10:244:2::/64 via 2001:db8::102 dev eth0"},
			[]string{"route 10.244.", "fd00:10:244:3::", "fd00:10:244:4::"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := subnet.ParseConfig([]byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			fake := netlinkx.NewFake()
			eth0 := fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
			ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500,
				Addr6: netip.MustParseAddr("2001:db8::1"), PublicIPv6: netip.MustParseAddr("2001:db8::1")}
			own := subnet.Lease{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
			if cfg.EnableIPv4 {
				ext.Addr, ext.PublicIP = netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("192.168.0.1")
				own.Subnet = netip.MustParsePrefix("10.244.1.0/24")
			}
			b, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: fake, VerifyEvery: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			dual := func(i int, pub6 string) subnet.Lease {
				l := peer(i, false)
				ip := netip.MustParseAddr(pub6)
				l.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i))
				l.Attrs.PublicIPv6 = &ip
				return l
			}
			far := dual(3, "2001:db9::103") // not on the underlay's IPv6 subnet
			err = b.Set(context.Background(), backend.State{Own: own, Peers: []subnet.Lease{dual(2, "2001:db8::102"), far, peer(4, false)}})
			if err == nil || !strings.Contains(err.Error(), "fd00:10:244:3::-64 (PublicIPv6 2001:db9::103): PublicIPv6 is not on a directly connected subnet") {
				t.Errorf("Set error %v, want the unreachable IPv6 peer named", err)
			}
			got := fake.Dump()
			for _, w := range tc.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("no %q in:\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("%q in:\n%s", a, got)
				}
			}
		})
	}
}
