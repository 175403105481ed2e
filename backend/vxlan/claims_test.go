package vxlan

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/kernel/netlinkx"
)

func TestClaimSet(t *testing.T) {
	macA := netlinkx.MAC{2, 0, 0, 0, 0, 0xa}
	macB := netlinkx.MAC{2, 0, 0, 0, 0, 0xb}
	p := netip.MustParsePrefix
	sn1, sn2, sn3 := p("10.244.1.0/24"), p("10.244.2.0/24"), p("10.244.3.0/24")
	type op struct {
		add bool
		mac netlinkx.MAC
		sn  netip.Prefix
	}
	for _, tc := range []struct {
		name string
		ops  []op
		// want is each MAC's claimants in order ("" when none).
		wantA, wantB string
	}{
		{"one claimant", []op{{true, macA, sn2}}, "[10.244.2.0/24]", "[]"},
		{"a lower subnet takes over", []op{{true, macA, sn2}, {true, macA, sn1}}, "[10.244.1.0/24 10.244.2.0/24]", "[]"},
		{"rivals in subnet order", []op{{true, macA, sn3}, {true, macA, sn1}, {true, macA, sn2}}, "[10.244.1.0/24 10.244.2.0/24 10.244.3.0/24]", "[]"},
		{"the owner leaves: the first rival takes over", []op{{true, macA, sn1}, {true, macA, sn3}, {true, macA, sn2}, {false, macA, sn1}}, "[10.244.2.0/24 10.244.3.0/24]", "[]"},
		{"a rival leaves", []op{{true, macA, sn1}, {true, macA, sn2}, {true, macA, sn3}, {false, macA, sn2}}, "[10.244.1.0/24 10.244.3.0/24]", "[]"},
		{"the last leaves", []op{{true, macA, sn1}, {true, macA, sn2}, {false, macA, sn1}, {false, macA, sn2}}, "[]", "[]"},
		{"removing a non-claimant changes nothing", []op{{true, macA, sn1}, {false, macA, sn2}, {false, macB, sn1}}, "[10.244.1.0/24]", "[]"},
		{"MACs apart", []op{{true, macA, sn1}, {true, macB, sn2}, {true, macB, sn3}}, "[10.244.1.0/24]", "[10.244.2.0/24 10.244.3.0/24]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClaimSet()
			for _, o := range tc.ops {
				if o.add {
					c.add(o.mac, o.sn)
				} else {
					c.remove(o.mac, o.sn)
				}
			}
			list := func(mac netlinkx.MAC) string {
				var l []netip.Prefix
				if o, ok := c.owner(mac); ok {
					l = append(append(l, o), c.others(mac)...)
				} else if len(c.others(mac)) > 0 {
					t.Errorf("%s has rivals %v and no owner", mac, c.others(mac))
				}
				return fmt.Sprint(l)
			}
			if got := list(macA); got != tc.wantA {
				t.Errorf("claimants of A = %s, want %s", got, tc.wantA)
			}
			if got := list(macB); got != tc.wantB {
				t.Errorf("claimants of B = %s, want %s", got, tc.wantB)
			}
			if len(c.rivals) > 0 && len(c.rivals[macA])+len(c.rivals[macB]) == 0 {
				t.Errorf("rivals holds empty lists: %v", c.rivals)
			}
		})
	}
}
