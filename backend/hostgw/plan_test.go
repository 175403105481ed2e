package hostgw

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// TestPlan checks the dry run: nothing after Set; a deleted route, a route
// of a peer that is gone and an off-link peer are reported; nothing is
// written.
func TestPlan(t *testing.T) {
	r := newRig(t)
	peers := []subnet.Lease{peer(2, false), peer(3, false)}
	if err := r.set(peers); err != nil {
		t.Fatal(err)
	}
	eth0, _ := r.fake.LinkByName("eth0")
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	addr := netip.MustParseAddr("192.168.0.1")
	p := backend.Params{Config: cfg, Ext: backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr}}
	plan := func(peers []subnet.Lease) backend.Plan {
		t.Helper()
		w := r.fake.Writes()
		pl, err := Plan(context.Background(), p, Config{Netlink: r.fake}, backend.State{Own: r.own, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		if r.fake.Writes() != w {
			t.Error("Plan wrote to the kernel")
		}
		return pl
	}
	if pl := plan(peers); len(pl.Changes)+len(pl.Skipped)+len(pl.Device) != 0 {
		t.Fatalf("Plan after Set = %+v", pl)
	}
	if err := r.fake.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.168.0.102"), LinkIndex: eth0.Index}); err != nil {
		t.Fatal(err)
	}
	pl := plan([]subnet.Lease{peer(2, false), peer(4, true)})
	var got []string
	for _, c := range pl.Changes {
		got = append(got, c.String())
	}
	want := "missing route 10.244.2.0/24: want 10.244.2.0/24 via 192.168.0.102 dev #2\n" +
		"extra route 10.244.3.0/24: have 10.244.3.0/24 via 192.168.0.103 dev #2"
	if g := strings.Join(got, "\n"); g != want {
		t.Errorf("changes:\n%s\nwant:\n%s", g, want)
	}
	if len(pl.Skipped) != 1 || !strings.Contains(pl.Skipped[0].Error(), "10.244.4.0-24") {
		t.Errorf("skipped = %v, want the off-link peer 10.244.4.0/24", pl.Skipped)
	}
}
