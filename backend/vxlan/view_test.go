package vxlan

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// checkView checks that the tunnel's desired state, as the programmer's
// netlinkx.Desired, is consistent (Counts match what the All functions
// yield, and every entry they yield is found by its key) and, after a Set
// that wrote everything, equal to what the programmer applied.
func checkView(t *testing.T, tun *tunnel, what string) {
	t.Helper()
	d := &tun.d
	var view netlinkx.Desired = d
	got := netlinkx.NewEntries(0)
	for ip, n := range view.AllNeighs() {
		if m, ok := view.LookupNeigh(ip); !ok || m != n || n.IP != ip {
			t.Errorf("%s: AllNeighs yields %v: %+v, LookupNeigh gives %+v, %v", what, ip, n, m, ok)
		}
		got.Neighs[ip] = n
	}
	for f := range view.AllFDBs() {
		if !view.HasFDB(f) {
			t.Errorf("%s: AllFDBs yields %+v, HasFDB says no", what, f)
		}
		got.FDBs[f] = struct{}{}
	}
	for dst, r := range view.AllRoutes() {
		if s, ok := view.LookupRoute(dst); !ok || s != r || r.Dst != dst {
			t.Errorf("%s: AllRoutes yields %v: %+v, LookupRoute gives %+v, %v", what, dst, r, s, ok)
		}
		got.Routes[dst] = r
	}
	if n, f, r := view.Counts(); n != len(got.Neighs) || f != len(got.FDBs) || r != len(got.Routes) {
		t.Errorf("%s: Counts() = %d, %d, %d; the view yields %d, %d, %d", what, n, f, r, len(got.Neighs), len(got.FDBs), len(got.Routes))
	}
	applied := tun.prog.Applied()
	for ip, n := range got.Neighs {
		n.Permanent = true
		got.Neighs[ip] = n
	}
	for dst, r := range got.Routes {
		r.Table = netlinkx.MainTable
		got.Routes[dst] = r
	}
	show := func(e netlinkx.Entries) string {
		return fmt.Sprint(slices.SortedFunc(maps.Values(e.Neighs), func(a, b netlinkx.Neigh) int { return a.IP.Compare(b.IP) }), " ",
			len(e.FDBs), " ", slices.SortedFunc(maps.Keys(e.Routes), subnet.CompareSubnets))
	}
	if !maps.Equal(got.Neighs, applied.Neighs) || !maps.Equal(got.FDBs, applied.FDBs) || !maps.Equal(got.Routes, applied.Routes) {
		t.Errorf("%s: the desired view\n%s\ndiffers from what the programmer applied\n%s", what, show(got), show(applied))
	}
}
