package wireguard

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/wg"
	"github.com/weftnet/weft/subnet"
)

// plan runs Plan against the rig's kernel and engine, as weft doctor does
// from another process.
func (r *rig) plan(t *testing.T, backendJSON string, peers ...subnet.Lease) backend.Plan {
	t.Helper()
	eth0, _ := r.nl.LinkByName("eth0")
	addr := netip.MustParseAddr("192.168.0.1")
	inspect := func(name, dir string) (wg.Kind, []wg.Peer, error) {
		if name != DeviceName {
			return "", nil, errors.New("wrong device " + name)
		}
		ps, err := r.engine.Peers()
		return r.engine.Kind(), ps, err
	}
	pl, err := Plan(context.Background(), backend.Params{
		Config: mustConfig(t, backendJSON),
		Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr},
	}, Config{Netlink: r.nl, Inspect: inspect}, backend.State{Own: r.own, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

func changes(pl backend.Plan) []string {
	var out []string
	for _, c := range pl.Changes {
		out = append(out, string(c.Kind)+" "+c.Object+" "+c.Key)
	}
	slices.Sort(out)
	return out
}

func TestPlan(t *testing.T) {
	const cfg = `{"Type":"wireguard"}`
	r := newRig(t, cfg)
	bad := lease(9, 51820)
	bad.Attrs.BackendType = "vxlan"
	peers := []subnet.Lease{lease(2, 51820), lease(3, 51820), bad}
	_ = r.set(t, peers...)

	// In order: nothing to change; the bad peer is reported skipped.
	pl := r.plan(t, cfg, peers...)
	if len(pl.Device) != 0 || len(pl.Changes) != 0 || len(pl.Skipped) != 1 || !strings.Contains(pl.Skipped[0].Error(), "10.244.9.0-24") {
		t.Fatalf("plan of a programmed node: %+v", pl)
	}

	// Someone removes a peer, adds one, changes a third's endpoint, sets
	// the MTU, takes the address and deletes the route.
	_ = r.engine.Apply([]wg.Peer{
		{PublicKey: peerKey(7), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")}},
		{PublicKey: peerKey(3), Endpoint: netip.MustParseAddrPort("192.168.0.99:1"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}},
	}, []wg.Key{peerKey(2)})
	l, _ := r.nl.LinkByName(DeviceName)
	if err := r.nl.SetLinkMTU(l.Index, 1400); err != nil {
		t.Fatal(err)
	}
	if err := r.nl.DeleteAddr(l.Index, netip.MustParsePrefix("10.244.1.0/32")); err != nil {
		t.Fatal(err)
	}
	if err := r.nl.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.244.0.0/16"), LinkIndex: l.Index}); err != nil {
		t.Fatal(err)
	}
	w := r.nl.Writes()
	ops := len(r.engine.Ops)
	pl = r.plan(t, cfg, peers...)
	want := []string{
		"extra wireguard peer " + peerKey(7).String(),
		"missing route 10.244.0.0/16",
		"missing wireguard peer " + peerKey(2).String(),
		"stale wireguard peer " + peerKey(3).String(),
	}
	slices.Sort(want)
	if got := changes(pl); !slices.Equal(got, want) {
		t.Errorf("changes = %q, want %q", got, want)
	}
	dev := strings.Join(pl.Device, "\n")
	for _, s := range []string{"MTU 1400, want 1440", "lacks the address 10.244.1.0/32"} {
		if !strings.Contains(dev, s) {
			t.Errorf("device findings lack %q: %q", s, pl.Device)
		}
	}
	if r.nl.Writes() != w || len(r.engine.Ops) != ops {
		t.Error("Plan wrote to the kernel or the engine")
	}
	// Set repairs exactly that, and the plan is empty again. It learns of
	// the device's changes from netlink notices, which the fake delivers
	// on a goroutine of its own: wait for them to arrive first.
	deadline := time.Now().Add(5 * time.Second)
	for r.b.v4.devOK.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := r.set(t, peers...); err != nil && !strings.Contains(err.Error(), "10.244.9.0-24") {
		t.Errorf("Set: %v", err)
	}
	if pl := r.plan(t, cfg, peers...); len(pl.Device)+len(pl.Changes) != 0 {
		t.Errorf("plan after Set: %+v", pl)
	}

	// The engine other than the one the config forces.
	if pl := r.plan(t, `{"Type":"wireguard","Engine":"kernel"}`, peers...); len(pl.Device) != 1 || !strings.Contains(pl.Device[0], "userspace engine, but the config asks for kernel") {
		t.Errorf("forced engine mismatch: %q", pl.Device)
	}

	// No device at all.
	if err := r.nl.DeleteLink(l.Index); err != nil {
		t.Fatal(err)
	}
	if pl := r.plan(t, cfg, peers...); len(pl.Device) != 1 || pl.Device[0] != "flannel-wg does not exist" {
		t.Errorf("plan without the device: %+v", pl)
	}
}

// TestPlanDualStack: Plan checks flannel-wg-v6 beside flannel-wg: its
// address, route and peers.
func TestPlanDualStack(t *testing.T) {
	const be = `{"Type":"wireguard"}`
	r := newRigConf(t, mustDual(t, be, true))
	peers := []subnet.Lease{lease6(2, 51820, 51821, true), lease6(3, 51820, 51821, true)}
	if err := r.set(t, peers...); err != nil {
		t.Fatal(err)
	}
	eth0, _ := r.nl.LinkByName("eth0")
	addr, addr6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("2001:db8::1")
	plan := func() backend.Plan {
		t.Helper()
		inspect := func(name, dir string) (wg.Kind, []wg.Peer, error) {
			e := r.engines[name]
			if e == nil {
				return "", nil, errors.New("no device " + name)
			}
			ps, err := e.Peers()
			return e.Kind(), ps, err
		}
		pl, err := Plan(context.Background(), backend.Params{
			Config: mustDual(t, be, true),
			Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr, Addr6: addr6, PublicIPv6: addr6},
		}, Config{Netlink: r.nl, Inspect: inspect}, backend.State{Own: r.own, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	if pl := plan(); len(pl.Device)+len(pl.Changes)+len(pl.Skipped) != 0 {
		t.Fatalf("plan of a programmed dual-stack node: %+v", pl)
	}
	l, _ := r.nl.LinkByName(DeviceNameV6)
	if err := r.nl.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("fd00:10:244::/56"), LinkIndex: l.Index}); err != nil {
		t.Fatal(err)
	}
	if err := r.nl.DeleteAddr(l.Index, netip.MustParsePrefix("fd00:10:244:1::/128")); err != nil {
		t.Fatal(err)
	}
	_ = r.engines[DeviceNameV6].Apply(nil, []wg.Key{peerKey(2)})
	pl := plan()
	want := []string{"missing route fd00:10:244::/56", "missing wireguard peer " + peerKey(2).String()}
	slices.Sort(want)
	if got := changes(pl); !slices.Equal(got, want) {
		t.Errorf("changes = %q, want %q", got, want)
	}
	if len(pl.Device) != 1 || !strings.Contains(pl.Device[0], "flannel-wg-v6 lacks the address fd00:10:244:1::/128") {
		t.Errorf("device findings = %q", pl.Device)
	}
}
