package vxlan

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// TestPlan checks the dry run: nothing after Set, then each fault the
// doctor reports (a deleted FDB entry, the device down and at another MTU,
// a peer claiming another's VtepMAC), and that Plan writes nothing.
func TestPlan(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	peers := []subnet.Lease{peer(2, false), peer(3, false)}
	if err := r.set(t, peers); err != nil {
		t.Fatal(err)
	}
	eth0, _ := r.fake.LinkByName("eth0")
	addr := netip.MustParseAddr("192.168.0.1")
	params := backend.Params{
		Config: mustConfig(t, `{"Type":"vxlan"}`),
		Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr},
	}
	plan := func(peers []subnet.Lease) backend.Plan {
		t.Helper()
		writes := r.fake.Writes()
		pl, err := Plan(context.Background(), params, Config{Netlink: r.fake}, backend.State{Own: r.own, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		if r.fake.Writes() != writes {
			t.Errorf("Plan wrote to the kernel")
		}
		return pl
	}
	if pl := plan(peers); len(pl.Device)+len(pl.Changes)+len(pl.Skipped) != 0 {
		t.Fatalf("Plan after Set = %+v, want nothing", pl)
	}

	dev, _ := r.fake.LinkByName("flannel.1")
	p3 := peer(3, false)
	mac3, _ := ParseBackendData(p3.Attrs.BackendData, 1)
	if err := r.fake.DeleteFDB(netlinkx.FDB{LinkIndex: dev.Index, MAC: mac3, Dst: p3.Attrs.PublicIP}); err != nil {
		t.Fatal(err)
	}
	if err := r.fake.SetLinkMTU(dev.Index, 1400); err != nil {
		t.Fatal(err)
	}
	pl := plan(peers)
	var got []string
	for _, c := range pl.Changes {
		got = append(got, c.String())
	}
	if g, w := strings.Join(got, "\n"), "missing fdb "+mac3.String()+": want dst 192.168.0.103"; g != w {
		t.Errorf("changes:\n%s\nwant:\n%s", g, w)
	}
	if g, w := strings.Join(pl.Device, "\n"), "flannel.1 has MTU 1400, want 1450 (underlay eth0 MTU 1500 minus 50)"; g != w {
		t.Errorf("device findings:\n%s\nwant:\n%s", g, w)
	}

	// A fourth peer advertising peer 2's VtepMAC is skipped, and said so.
	dup := peer(4, false)
	mac2, _ := ParseBackendData(peer(2, false).Attrs.BackendData, 1)
	dup.Attrs.BackendData, _ = json.Marshal(BackendData{VNI: 1, VtepMAC: mac2.String()})
	pl = plan(append(peers, dup))
	if len(pl.Skipped) != 1 || !strings.Contains(pl.Skipped[0].Error(), "VtepMAC "+mac2.String()+" is already used by peer 10.244.2.0/24") {
		t.Errorf("skipped = %v, want 10.244.4.0/24 skipped for peer 2's VtepMAC", pl.Skipped)
	}
}
