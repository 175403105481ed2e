package nftables

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/test/netnstest"
)

// switchModes runs what the agent runs on a restart in mode `to`: a
// keeper of the new mode retiring the old one, one pass.
func switchModes(t *testing.T, x *fixture, to, from firewall.Firewall, p firewall.Policy) {
	t.Helper()
	k := firewall.NewKeeper(to, firewall.KeeperOptions{Retire: from})
	if err := k.Set(p); err != nil {
		t.Fatal(err)
	}
	x.do(func() error { return k.Ensure(context.Background()) })
}

func newIPTables(t *testing.T) *iptables.Firewall {
	t.Helper()
	fw, err := iptables.NewFirewall(nil)
	if err != nil {
		t.Fatal(err)
	}
	return fw
}

func TestSwitchIPTablesToNFTables(t *testing.T) {
	x := newFixture(t)
	// A previous run in iptables mode, both families.
	x.do(func() error { return newIPTables(t).Ensure(context.Background(), dualPolicy()) })
	if got := x.iptablesSave(); strings.Count(got, "-N FLANNEL-") != 4 {
		t.Fatalf("iptables mode did not set up its chains:\n%s", got)
	}
	// The restart in nftables mode (fresh instances, as a new process).
	nft, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	switchModes(t, x, nft, newIPTables(t), dualPolicy())
	if got := x.iptablesSave(); strings.Contains(got, "FLANNEL") {
		t.Fatalf("iptables still holds Weft's chains or jumps after the switch to nftables:\n%s", got)
	}
	if x.v4() != wantV4 || x.v6() != wantV6 {
		t.Fatalf("nftables tables after the switch:\n%s%s", x.v4(), x.v6())
	}
	x.checkForeign()
}

func TestSwitchNFTablesToIPTables(t *testing.T) {
	x := newFixture(t)
	x.ensure(dualPolicy()) // a previous run in nftables mode
	nft, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	switchModes(t, x, newIPTables(t), nft, dualPolicy())
	if got := x.v4() + x.v6(); got != "" {
		t.Fatalf("nftables tables left after the switch to iptables:\n%s", got)
	}
	got := x.iptablesSave()
	for _, want := range []string{
		"-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
		"-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD",
		"-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4",
		"-A FLANNEL-POSTRTG -s fd00::/56 ! -d ff00::/8",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("iptables after the switch lacks %q:\n%s", want, got)
		}
	}
	x.checkForeign()
}

// TestMasqueradeToOutside: a pod reaches a host outside the cluster network
// through its node, and the outside host sees the node's address as the
// source; without the rules it cannot be reached at all (it has no route
// back to the pods). The same for both modes.
func TestMasqueradeToOutside(t *testing.T) {
	modes := []struct {
		name string
		open func(t *testing.T) firewall.Firewall
	}{
		{"nftables", func(t *testing.T) firewall.Firewall {
			fw, err := New(nil)
			if err != nil {
				t.Fatal(err)
			}
			return fw
		}},
		{"iptables", func(t *testing.T) firewall.Firewall { return newIPTables(t) }},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			netnstest.SkipUnlessRoot(t)
			netnstest.RequireTool(t, "nft", "nftables")
			netnstest.RequireTool(t, "iptables", "iptables")
			sw := netnstest.NewSwitch(t)
			node := netnstest.NewNS(t, "node")
			outside := netnstest.NewNS(t, "out")
			nodeAddr := netip.MustParsePrefix("192.168.77.1/24")
			sw.Join(t, node, "eth0", nodeAddr)
			sw.Join(t, outside, "eth0", netip.MustParsePrefix("192.168.77.2/24"))
			pod := netnstest.NewPod(t, node, "veth0", netip.MustParsePrefix("10.244.52.1/24"), netip.MustParsePrefix("10.244.52.2/24"))
			target := netip.MustParseAddrPort("192.168.77.2:8080")

			if src, err := netnstest.SourceSeen(pod, outside, target, 500*time.Millisecond); err == nil {
				t.Fatalf("without masquerading the outside host was reached (from %s): the test proves nothing", src)
			}
			fw := m.open(t)
			if err := node.Do(func() error { return fw.Ensure(context.Background(), v4Policy()) }); err != nil {
				t.Fatal(err)
			}
			src, err := netnstest.SourceSeen(pod, outside, target, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if src != nodeAddr.Addr() {
				t.Fatalf("the outside host saw %s as the source, want the node's %s", src, nodeAddr.Addr())
			}

			// Pod to pod keeps its source: a pod on a remote node.
			remote := netnstest.NewNS(t, "remote")
			sw.Join(t, remote, "eth0", netip.MustParsePrefix("192.168.77.3/24"))
			remote.MustExec(t, "ip", "addr", "add", "10.244.7.2/32", "dev", "lo")
			remote.MustExec(t, "ip", "route", "add", "10.244.52.0/24", "via", "192.168.77.1")
			node.MustExec(t, "ip", "route", "add", "10.244.7.0/24", "via", "192.168.77.3")
			src, err = netnstest.SourceSeen(pod, remote, netip.MustParseAddrPort("10.244.7.2:8080"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if want := netip.MustParseAddr("10.244.52.2"); src != want {
				t.Fatalf("a remote pod saw %s as the source, want the pod's own %s", src, want)
			}

			// A packet carrying kube-proxy's bit among others (mark 0x4001)
			// is left alone, as iptables' --mark 0x4000/0x4000 does: not
			// masqueraded, the outside host cannot answer it.
			node.MustExec(t, "nft", "add", "table", "ip", "weft-test-mark")
			node.MustExec(t, "nft", "add", "chain", "ip", "weft-test-mark", "pre", "{ type filter hook prerouting priority mangle; }")
			node.MustExec(t, "nft", "add", "rule", "ip", "weft-test-mark", "pre", "tcp", "dport", "8081", "meta", "mark", "set", "0x4001")
			if src, err := netnstest.SourceSeen(pod, outside, netip.MustParseAddrPort("192.168.77.2:8081"), 500*time.Millisecond); err == nil {
				t.Fatalf("a packet marked 0x4001 was masqueraded (the outside host saw %s)", src)
			}
		})
	}
}
