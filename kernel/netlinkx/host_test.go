package netlinkx_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/test/netnstest"
)

// TestHostQueries reads links, addresses, default routes and route
// destinations back from a namespace set up with ip(8).
func TestHostQueries(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "host")
	peer := netnstest.NewNS(t, "hostpeer")
	netnstest.NewVeth(t, ns, "ext0", netip.MustParsePrefix("192.0.2.10/24"), peer, "p0", netip.Prefix{})
	ns.MustExec(t, "ip", "addr", "add", "169.254.7.7/16", "dev", "ext0")
	ns.MustExec(t, "ip", "addr", "add", "192.0.2.99/32", "dev", "ext0", "scope", "host")
	ns.MustExec(t, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "ext0", "src", "192.0.2.10")
	ns.MustExec(t, "ip", "route", "add", "198.51.100.0/25", "via", "192.0.2.2", "table", "100")
	h := ns.Netlink(t)

	links, err := h.Links()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(links, func(l netlinkx.Link) bool { return l.Name == "ext0" })
	if i < 0 || links[i].Type != "veth" || !links[i].Up {
		t.Fatalf("Links() = %+v, want an up veth ext0", links)
	}
	ext := links[i]
	if !slices.ContainsFunc(links, func(l netlinkx.Link) bool { return l.Name == "lo" }) {
		t.Errorf("Links() lacks lo: %+v", links)
	}

	all, err := h.AddrList(0)
	if err != nil {
		t.Fatal(err)
	}
	one, err := h.AddrList(ext.Index)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel keeps a link's addresses in order of scope (host first),
	// then of addition.
	want := []netlinkx.Addr{
		{LinkIndex: ext.Index, Prefix: netip.MustParsePrefix("192.0.2.99/32"), Global: false},
		{LinkIndex: ext.Index, Prefix: netip.MustParsePrefix("192.0.2.10/24"), Global: true},
		{LinkIndex: ext.Index, Prefix: netip.MustParsePrefix("169.254.7.7/16"), Global: true},
	}
	if !slices.Equal(one, want) {
		t.Errorf("AddrList(ext0) = %+v, want %+v", one, want)
	}
	if !slices.Contains(all, netlinkx.Addr{LinkIndex: 1, Prefix: netip.MustParsePrefix("127.0.0.1/8")}) || len(all) != len(want)+1 {
		t.Errorf("AddrList(0) = %+v, want lo's 127.0.0.1/8 (host scope) and ext0's", all)
	}

	defs, err := h.DefaultRoutes()
	if err != nil {
		t.Fatal(err)
	}
	wantDef := []netlinkx.DefaultRoute{{LinkIndex: ext.Index, Gw: netip.MustParseAddr("192.0.2.1"), Src: netip.MustParseAddr("192.0.2.10")}}
	if !slices.Equal(defs, wantDef) {
		t.Errorf("DefaultRoutes() = %+v, want %+v", defs, wantDef)
	}

	dsts, err := h.RouteDsts()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"192.0.2.0/24", "198.51.100.0/25", "127.0.0.0/8"} {
		if !slices.Contains(dsts, netip.MustParsePrefix(p)) {
			t.Errorf("RouteDsts() = %v, want it to hold %s", dsts, p)
		}
	}
	if slices.Contains(dsts, netip.MustParsePrefix("0.0.0.0/0")) {
		t.Errorf("RouteDsts() = %v holds the default route", dsts)
	}
}
