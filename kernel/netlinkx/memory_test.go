package netlinkx

import (
	"net/netip"
	"testing"
)

// TestMemoryRoundTrip checks that the programmer's compact memory gives
// back the entries it recorded, for both families and the zero values.
func TestMemoryRoundTrip(t *testing.T) {
	mac := MAC{2, 0x42, 0xac, 0x11, 0, 2}
	for _, tc := range []struct {
		name  string
		ip    netip.Addr
		dst   netip.Prefix
		gw    netip.Addr
		onLnk bool
	}{
		{"IPv4", netip.MustParseAddr("10.244.1.0"), netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("10.244.1.0"), true},
		{"IPv6", netip.MustParseAddr("fd00:0:0:1::"), netip.MustParsePrefix("fd00:0:0:1::/64"), netip.MustParseAddr("fe80::1"), false},
		{"IPv4-mapped IPv6 stays IPv6", netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParsePrefix("::ffff:10.0.0.0/120"), netip.MustParseAddr("::ffff:10.0.0.1"), false},
		{"no gateway", netip.MustParseAddr("192.168.0.7"), netip.MustParsePrefix("10.9.0.0/16"), netip.Addr{}, false},
		{"default route", netip.MustParseAddr("192.168.0.8"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.168.0.1"), false},
		{"IPv4 route via an IPv6 gateway", netip.MustParseAddr("192.168.0.9"), netip.MustParsePrefix("10.9.0.0/16"), netip.MustParseAddr("fe80::9"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemory(1)
			n := Neigh{LinkIndex: 7, IP: tc.ip, MAC: mac, Permanent: true}
			f := FDB{LinkIndex: 7, MAC: mac, Dst: tc.ip}
			r := Route{Table: MainTable, Dst: tc.dst, Gw: tc.gw, LinkIndex: 7, OnLink: tc.onLnk}
			m.setNeigh(n.IP, n)
			m.addFDB(f)
			m.setRoute(r.Dst, r)
			if got, ok := m.neigh(tc.ip); !ok || got != n {
				t.Errorf("neigh = %+v, %v; want %+v", got, ok, n)
			}
			if !m.hasFDB(f) {
				t.Errorf("hasFDB(%+v) = false", f)
			}
			if got, ok := m.route(tc.dst); !ok || got != r {
				t.Errorf("route = %+v, %v; want %+v", got, ok, r)
			}
			e := m.entries()
			if len(e.Neighs) != 1 || e.Neighs[tc.ip] != n || len(e.FDBs) != 1 || len(e.Routes) != 1 || e.Routes[tc.dst] != r {
				t.Errorf("entries() = %+v; want %+v, %+v, %+v", e, n, f, r)
			}
			if _, ok := e.FDBs[f]; !ok {
				t.Errorf("entries() lacks %+v", f)
			}
			// Another link or MAC is another FDB entry; the other family's
			// form of an address is another key.
			if m.hasFDB(FDB{LinkIndex: 8, MAC: mac, Dst: tc.ip}) || m.hasFDB(FDB{LinkIndex: 7, MAC: MAC{2}, Dst: tc.ip}) {
				t.Error("hasFDB matched an entry of another link or MAC")
			}
			if tc.ip.Is4() {
				if _, ok := m.neigh(netip.AddrFrom16(tc.ip.As16())); ok {
					t.Error("the IPv4-mapped form of an IPv4 neighbour matched it")
				}
			}
			m.deleteNeigh(tc.ip)
			m.deleteFDB(f)
			m.deleteRoute(tc.dst)
			if m.numNeighs()+m.numFDBs()+m.numRoutes() != 0 {
				t.Errorf("after deleting: %+v", m.entries())
			}
		})
	}
	// A route changing gateway family is kept in one form only.
	m := newMemory(0)
	dst := netip.MustParsePrefix("10.9.0.0/16")
	for _, gw := range []string{"fe80::9", "192.168.0.1", "fe80::9"} {
		r := Route{Table: MainTable, Dst: dst, Gw: netip.MustParseAddr(gw), LinkIndex: 3}
		m.setRoute(dst, r)
		if got, ok := m.route(dst); !ok || got != r || m.numRoutes() != 1 {
			t.Errorf("after setting %v: route = %+v, %v; %d routes", r, got, ok, m.numRoutes())
		}
	}
	m.deleteRoute(dst)
	if m.numRoutes() != 0 {
		t.Errorf("%d routes after deleting the only one", m.numRoutes())
	}
	if k := packPrefix(netip.Prefix{}); k != (prefixKey{}) || k.prefix() != (netip.Prefix{}) {
		t.Errorf("the zero Prefix packs to %+v, back to %v", k, k.prefix())
	}
	if k := packAddr(netip.Addr{}); k != (addrKey{}) || k.addr() != (netip.Addr{}) {
		t.Errorf("the zero Addr packs to %+v, back to %v", k, k.addr())
	}
}
