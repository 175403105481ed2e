package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/firewalltest"
)

func TestFirewallPolicy(t *testing.T) {
	p := netip.MustParsePrefix
	v4 := subnet.Lease{Subnet: p("10.244.3.0/24")}
	dual := subnet.Lease{Subnet: p("10.244.3.0/24"), IPv6Subnet: p("fd00:0:0:3::/64")}
	tests := []struct {
		name   string
		cfg    subnet.Config
		masq   bool
		fwd    bool
		lease  subnet.Lease
		policy firewall.Policy
	}{
		{"v4", subnet.Config{EnableIPv4: true, Network: p("10.244.0.0/16")}, true, true, v4,
			firewall.Policy{Masq: true, Forward: true, IPv4: firewall.Net{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24")}}},
		{"forward only", subnet.Config{EnableIPv4: true, Network: p("10.244.0.0/16")}, false, true, v4,
			firewall.Policy{Forward: true, IPv4: firewall.Net{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24")}}},
		{"dual", subnet.Config{EnableIPv4: true, EnableIPv6: true, Network: p("10.244.0.0/16"), IPv6Network: p("fd00::/56")}, true, false, dual,
			firewall.Policy{Masq: true, IPv4: firewall.Net{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24")},
				IPv6: firewall.Net{Network: p("fd00::/56"), Subnet: p("fd00:0:0:3::/64")}}},
		{"v6 on, lease without v6", subnet.Config{EnableIPv4: true, EnableIPv6: true, Network: p("10.244.0.0/16"), IPv6Network: p("fd00::/56")}, true, false, v4,
			firewall.Policy{Masq: true, IPv4: firewall.Net{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24")}}},
		{"v6 only", subnet.Config{EnableIPv6: true, IPv6Network: p("fd00::/56")}, true, true, subnet.Lease{IPv6Subnet: p("fd00:0:0:3::/64")},
			firewall.Policy{Masq: true, Forward: true, IPv6: firewall.Net{Network: p("fd00::/56"), Subnet: p("fd00:0:0:3::/64")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{o: Options{IPMasq: tt.masq, ForwardRules: tt.fwd}, cfg: &tt.cfg}
			if got := a.firewallPolicy(tt.lease); got != tt.policy {
				t.Errorf("policy %+v, want %+v", got, tt.policy)
			}
		})
	}
}

// TestStartFirewall: the network config's EnableNFTables chooses the mode,
// the rules are in place when setUpHost says the host is set up, the other
// mode's rules are removed after them, forwarding is on, and a lease change
// reaches the keeper.
func TestStartFirewall(t *testing.T) {
	notInstalled := fmt.Errorf("nft: %w", firewall.ErrNotInstalled)
	tests := []struct {
		name       string
		nft        bool
		missing    firewall.Mode // this mode cannot be opened (ErrNotInstalled)
		wantKept   firewall.Mode // "" when no firewall runs
		wantRetire bool
	}{
		{"iptables", false, "", firewall.IPTables, true},
		{"nftables", true, "", firewall.NFTables, true},
		{"nftables, no iptables on the host", true, firewall.IPTables, firewall.NFTables, false},
		{"nftables chosen but missing", true, firewall.NFTables, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes := map[firewall.Mode]*firewalltest.Fake{firewall.IPTables: {}, firewall.NFTables: {}}
			ctx := context.Background()
			old := firewall.Policy{Masq: true, IPv4: firewall.Net{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.9.0/24")}}
			for _, f := range fakes { // rules from earlier runs
				if err := f.Ensure(ctx, old); err != nil {
					t.Fatal(err)
				}
			}
			fwd := filepath.Join(t.TempDir(), "ip_forward")
			if err := os.WriteFile(fwd, []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := New(Options{Manager: firewallTestManager{}, Backends: firewallTestBackends, IPMasq: true, ForwardRules: true, IPForwardFile: fwd,
				Firewall: func(m firewall.Mode) (firewall.Firewall, error) {
					if m == tt.missing {
						return nil, notInstalled
					}
					return fakes[m], nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			a.cfg = &subnet.Config{EnableIPv4: true, EnableNFTables: tt.nft, Network: netip.MustParsePrefix("10.244.0.0/16")}
			lease := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}
			done := make(chan struct{})
			a.openFirewall(lease, func(error) { close(done) })
			rctx, cancel := context.WithCancel(ctx)
			stopped := make(chan struct{})
			go func() { a.setUpHost(rctx, done); close(stopped) }()
			defer func() { cancel(); <-stopped }()
			<-done
			if b, err := os.ReadFile(fwd); err != nil || string(b) != "1\n" {
				t.Errorf("forwarding file holds %q (%v) once the host is set up, want 1", b, err)
			}
			if tt.wantKept == "" {
				if a.fw != nil {
					t.Fatal("a keeper runs without a firewall")
				}
				for m, f := range fakes {
					if _, _, r := f.Counts(); r != 0 {
						t.Errorf("%s rules removed although the chosen mode is missing", m)
					}
				}
				return
			}
			kept, other := fakes[tt.wantKept], fakes[tt.wantKept.Other()]
			if got, ok := kept.Installed(); !ok || got != a.firewallPolicy(lease) {
				t.Fatalf("%s holds %+v (%v), want %+v", tt.wantKept, got, ok, a.firewallPolicy(lease))
			}
			_, otherThere := other.Installed()
			if otherThere == tt.wantRetire {
				t.Errorf("%s rules there: %v, want %v", tt.wantKept.Other(), otherThere, !tt.wantRetire)
			}
			lease2 := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.4.0/24")}
			a.setFirewallPolicy(lease2)
			if err := a.fw.Ensure(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := kept.Installed(); got.IPv4.Subnet != lease2.Subnet {
				t.Errorf("after the lease change the rules are for %s, want %s", got.IPv4.Subnet, lease2.Subnet)
			}
		})
	}
}

// firewallTestManager and firewallTestBackends satisfy New; openFirewall
// and setUpHost use neither.
type firewallTestManager struct{ subnet.Manager }

func firewallTestBackends(string) (backend.Spec, error) {
	return backend.Spec{}, errors.New("no backends in this test")
}

// gatedFirewall is a firewall whose Ensure waits until gate is closed, as
// iptables commands take their time.
type gatedFirewall struct {
	firewalltest.Fake
	gate chan struct{}
}

func (g *gatedFirewall) Ensure(ctx context.Context, p firewall.Policy) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Fake.Ensure(ctx, p)
}

// The peers listed at start are programmed while the firewall rules are
// still being written, and the agent is ready only once both are done.
func TestPeersDoNotWaitForFirewall(t *testing.T) {
	fw := &gatedFirewall{gate: make(chan struct{})}
	r := newRig(t, func(o *Options) {
		o.Firewall = func(m firewall.Mode) (firewall.Firewall, error) {
			if m != firewall.IPTables {
				return nil, firewall.ErrNotInstalled
			}
			return fw, nil
		}
		o.IPMasq = true
	})
	r.start()
	r.mgr.send(t, added(peer(2))...)
	r.eventually("the first Set to end while the firewall is held", func() bool {
		_, why := r.agent.Ready()
		return why == "programming the firewall rules"
	})
	if dump := r.nl.Dump(); !strings.Contains(dump, routeLine(peer(2))) {
		t.Errorf("the listed peer is not programmed while the firewall is held:\n%s", dump)
	}
	if ok, _ := r.agent.Ready(); ok {
		t.Error("ready while the firewall is held")
	}
	if _, there := fw.Installed(); there {
		t.Fatal("rules installed while the firewall is held")
	}
	close(fw.gate)
	r.waitReady()
	if got, ok := fw.Installed(); !ok || got != r.agent.firewallPolicy(r.agent.Own()) {
		t.Errorf("rules once ready: %+v (%v), want %+v", got, ok, r.agent.firewallPolicy(r.agent.Own()))
	}
}
