package netlinkx

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestMAC(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		unicast bool
	}{
		{"02:42:ac:11:00:02", true, true},
		{"01:00:5e:00:00:01", true, false},
		{"00:00:00:00:00:00", true, false},
		{"02:42:ac:11:00", false, false},
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", false, false},
		{"zz", false, false},
	} {
		m, err := ParseMAC(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseMAC(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if m.String() != tc.in || m.IsUnicast() != tc.unicast {
			t.Errorf("ParseMAC(%q) = %s unicast=%v", tc.in, m, m.IsUnicast())
		}
	}
}

func TestProgrammerEchoesAndForeign(t *testing.T) {
	f := NewFake()
	eth0 := f.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"))
	owns := func(r Route, link int) bool { return r.LinkIndex == eth0.Index && r.Gw.IsValid() }
	p := NewProgrammer(f, owns, time.Hour)
	want := NewEntries(1)
	r := Route{Dst: netip.MustParsePrefix("10.1.0.0/24"), Gw: netip.MustParseAddr("192.168.0.2"), LinkIndex: eth0.Index}
	want.Routes[r.Dst] = r
	st, err := p.Sync(0, want)
	if err != nil || !st.Dumped || st.Added != 1 {
		t.Fatalf("first Sync = %+v, %v", st, err)
	}
	r.Table = MainTable
	if p.Observe(Update{Kind: RouteUpdate, Route: r}) {
		t.Error("the echo of our own write counted as a change")
	}
	st, err = p.Sync(0, want)
	if err != nil || st.Dumped || st.Added+st.Deleted != 0 {
		t.Errorf("idle Sync = %+v, %v: want no dump and no writes", st, err)
	}
	if !p.Observe(Update{Kind: RouteUpdate, Deleted: true, Route: r}) {
		t.Error("deleting our route by hand went unnoticed")
	}
	foreign := Route{Table: MainTable, Dst: netip.MustParsePrefix("10.9.0.0/24"), LinkIndex: eth0.Index}
	if p.Observe(Update{Kind: RouteUpdate, Route: foreign}) {
		t.Error("a route we do not own counted as a change")
	}
	if err := f.DeleteRoute(r); err != nil {
		t.Fatal(err)
	}
	st, err = p.Sync(0, want)
	if err != nil || !st.Dumped || st.Added != 1 {
		t.Errorf("repairing Sync = %+v, %v", st, err)
	}
	// Removing everything deletes only what is ours.
	if _, err := p.Sync(0, NewEntries(0)); err != nil {
		t.Fatal(err)
	}
	wantDump := "addr eth0 192.168.0.1/24\naddr lo 127.0.0.1/8\nlink eth0 veth mtu 1500 mac 02:ee:00:00:00:02 up\nlink lo device mtu 65536 mac 00:00:00:00:00:00 up\nroute 192.168.0.0/24 dev eth0\n"
	if got := f.Dump(); got != wantDump {
		t.Errorf("Dump after removal:\n%s\nwant:\n%s", got, wantDump)
	}
}

func TestFakeNotFound(t *testing.T) {
	f := NewFake()
	if _, err := f.LinkByName("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LinkByName: %v", err)
	}
	if err := f.DeleteRoute(Route{Dst: netip.MustParsePrefix("10.0.0.0/8")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteRoute: %v", err)
	}
}
