package netlinkx

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPlan checks that Plan lists exactly what Sync then changes, and
// writes nothing itself.
func TestPlan(t *testing.T) {
	f := NewFake()
	f.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"))
	dev := f.AddLink("flannel.1", 1450)
	owns := func(r Route, link int) bool { return r.LinkIndex == link }
	p := NewProgrammer(f, owns, time.Hour)
	mac := func(s string) MAC { m, _ := ParseMAC(s); return m }
	a := netip.MustParseAddr
	want := NewEntries(2)
	for i, peer := range []string{"10.244.1", "10.244.2"} {
		gw := a(peer + ".0")
		m := mac("02:00:00:00:00:0" + string(rune('1'+i)))
		want.Neighs[gw] = Neigh{LinkIndex: dev.Index, IP: gw, MAC: m}
		want.FDBs[FDB{LinkIndex: dev.Index, MAC: m, Dst: a("192.168.0." + string(rune('2'+i)))}] = struct{}{}
		dst := netip.MustParsePrefix(peer + ".0/24")
		want.Routes[dst] = Route{Dst: dst, Gw: gw, LinkIndex: dev.Index, OnLink: true}
	}
	if _, err := p.Sync(dev.Index, want); err != nil {
		t.Fatal(err)
	}
	if ch, err := p.Plan(dev.Index, want); err != nil || len(ch) != 0 {
		t.Fatalf("Plan after Sync = %v, %v: want nothing", ch, err)
	}

	// Faults: one FDB entry deleted, one neighbour with another MAC, a
	// route nobody wants.
	if err := f.DeleteFDB(FDB{LinkIndex: dev.Index, MAC: mac("02:00:00:00:00:01"), Dst: a("192.168.0.2")}); err != nil {
		t.Fatal(err)
	}
	f.PutNeigh(Neigh{LinkIndex: dev.Index, IP: a("10.244.2.0"), MAC: mac("02:00:00:00:00:09"), Permanent: true})
	extra := netip.MustParsePrefix("10.244.9.0/24")
	if err := f.ReplaceRoute(Route{Dst: extra, Gw: a("10.244.9.0"), LinkIndex: dev.Index, OnLink: true}); err != nil {
		t.Fatal(err)
	}
	writes := f.Writes()
	ch, err := p.Plan(dev.Index, want)
	if err != nil {
		t.Fatal(err)
	}
	if f.Writes() != writes {
		t.Errorf("Plan wrote to the kernel (%d writes)", f.Writes()-writes)
	}
	var got []string
	for _, c := range ch {
		got = append(got, c.String())
	}
	wantPlan := strings.Join([]string{
		"missing fdb 02:00:00:00:00:01: want dst 192.168.0.2",
		"stale neighbour 10.244.2.0: have lladdr 02:00:00:00:00:09, want lladdr 02:00:00:00:00:02",
		"extra route 10.244.9.0/24: have 10.244.9.0/24 via 10.244.9.0 dev #" + strconv.Itoa(dev.Index) + " onlink",
	}, "\n")
	if g := strings.Join(got, "\n"); g != wantPlan {
		t.Errorf("Plan:\n%s\nwant:\n%s", g, wantPlan)
	}
	p.Invalidate() // the test changed the kernel behind its back
	st, err := p.Sync(dev.Index, want)
	if err != nil || st.Added+st.Deleted != len(ch) {
		t.Errorf("Sync after Plan = %+v, %v: want %d writes, one per planned change", st, err, len(ch))
	}
	if ch, err := p.Plan(dev.Index, want); err != nil || len(ch) != 0 {
		t.Errorf("Plan after repair = %v, %v", ch, err)
	}
}
