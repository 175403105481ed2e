package base

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

func TestOnLink(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("198.51.100.1/32")}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"192.0.2.11", true},
		{"192.0.2.10", false}, // the address itself
		{"198.51.100.1", false},
		{"198.51.100.2", false}, // a /32 has no neighbours
		{"203.0.113.1", false},
	} {
		if got := OnLink(prefixes, netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("OnLink(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

func TestBeginAndPeerSubnet(t *testing.T) {
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	f := netlinkx.NewFake()
	eth := f.AddLink("eth0", 1500)
	ext := backend.ExternalInterface{Name: "eth0", Index: eth.Index, MTU: 1500, Addr: netip.MustParseAddr("192.0.2.10")}
	owns := func(netlinkx.Route, int) bool { return false }
	if _, err := New(context.Background(), backend.Params{Config: cfg, Ext: backend.ExternalInterface{Name: "lo"}}, Options{Netlink: f}, Kind{Name: "x", Owns: owns}); err == nil || !strings.Contains(err.Error(), `x backend: external interface "lo"`) {
		t.Errorf("New without an IPv4 underlay: %v", err)
	}
	b, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Options{Netlink: f}, Kind{Name: "x", Device: "eth0", Owns: owns})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sn := netip.MustParsePrefix
	if !b.PeerSubnet(sn("10.244.3.0/24")) {
		t.Error("before any Set every subnet of the network is a peer's")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Begin(ctx, backend.State{Own: subnet.Lease{Subnet: sn("10.244.3.0/24")}}); err != context.Canceled {
		t.Errorf("Begin after cancel: %v", err)
	}
	for _, own := range []netip.Prefix{{}, sn("10.245.3.0/24"), sn("10.244.3.0/25")} {
		err := b.Begin(context.Background(), backend.State{Own: subnet.Lease{Subnet: own}})
		if err == nil || !strings.Contains(err.Error(), "x backend: own subnet") {
			t.Errorf("Begin(own %v) = %v, want an error", own, err)
		}
	}
	if err := b.Begin(context.Background(), backend.State{Own: subnet.Lease{Subnet: sn("10.244.3.0/24")}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{"10.244.3.0/24", false}, // our own
		{"10.244.4.0/24", true},
		{"10.244.4.0/25", false},
		{"10.99.4.0/24", false},
	} {
		if got := b.PeerSubnet(sn(tc.dst)); got != tc.want {
			t.Errorf("PeerSubnet(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}
	if b.Type() != "x" {
		t.Errorf("Type() = %q", b.Type())
	}
}
