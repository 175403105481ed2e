package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/test/netnstest"
)

func TestRules(t *testing.T) {
	tests := []struct {
		name, network, subnet string
		masq, fwd             []string
	}{{
		name: "ipv4", network: "10.244.0.0/16", subnet: "10.244.52.1/24",
		masq: []string{
			`nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s 10.244.52.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.52.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.52.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
		fwd: []string{
			`filter -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
			`filter -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		},
	}, {
		name: "ipv6", network: "fd00::/56", subnet: "fd00:0:0:34::1/64",
		masq: []string{
			`nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s fd00:0:0:34::/64 -d fd00::/56 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s fd00::/56 -d fd00:0:0:34::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG ! -s fd00::/56 -d fd00:0:0:34::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`nat -A FLANNEL-POSTRTG -s fd00::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`nat -A FLANNEL-POSTRTG ! -s fd00::/56 -d fd00::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
		fwd: []string{
			`filter -A FLANNEL-FWD -s fd00::/56 -m comment --comment "flanneld forward" -j ACCEPT`,
			`filter -A FLANNEL-FWD -d fd00::/56 -m comment --comment "flanneld forward" -j ACCEPT`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			masq, fwd := Rules(netip.MustParsePrefix(tt.network), netip.MustParsePrefix(tt.subnet))
			if got := ruleStrings(masq); !slices.Equal(got, tt.masq) {
				t.Errorf("masq rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.masq, "\n"))
			}
			if got := ruleStrings(fwd); !slices.Equal(got, tt.fwd) {
				t.Errorf("forward rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.fwd, "\n"))
			}
		})
	}
}

func TestSplitRule(t *testing.T) {
	tests := []struct {
		line  string
		chain string
		spec  []string
		ok    bool
	}{
		{`-A X -s 1.2.3.0/24 -m comment --comment "flanneld masq" -j RETURN`, "X",
			[]string{"-s", "1.2.3.0/24", "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN"}, true},
		{`-A X -m comment --comment "a \"q\"" -j Y`, "X", []string{"-m", "comment", "--comment", `a "q"`, "-j", "Y"}, true},
		{`-N X`, "", nil, false},
		{`-P POSTROUTING ACCEPT`, "", nil, false},
		{``, "", nil, false},
	}
	for _, tt := range tests {
		c, spec, ok := splitRule(tt.line)
		if c != tt.chain || !slices.Equal(spec, tt.spec) || ok != tt.ok {
			t.Errorf("splitRule(%q) = %q, %q, %v; want %q, %q, %v", tt.line, c, spec, ok, tt.chain, tt.spec, tt.ok)
		}
	}
}

func ruleStrings(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// countingIPT counts the calls that write.
type countingIPT struct {
	IPTables
	writes *atomic.Int64
}

func (c *countingIPT) NewChain(t, ch string) error {
	c.writes.Add(1)
	return c.IPTables.NewChain(t, ch)
}
func (c *countingIPT) ClearChain(t, ch string) error {
	c.writes.Add(1)
	return c.IPTables.ClearChain(t, ch)
}
func (c *countingIPT) Append(t, ch string, s ...string) error {
	c.writes.Add(1)
	return c.IPTables.Append(t, ch, s...)
}
func (c *countingIPT) Delete(t, ch string, s ...string) error {
	c.writes.Add(1)
	return c.IPTables.Delete(t, ch, s...)
}
func (c *countingIPT) DeleteChain(t, ch string) error {
	c.writes.Add(1)
	return c.IPTables.DeleteChain(t, ch)
}

// newTestNS returns a namespace of its own for one test, so that no test
// touches the root namespace's iptables.
func newTestNS(t *testing.T) *netnstest.NS {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	netnstest.RequireTool(t, "iptables", "iptables")
	netnstest.RequireTool(t, "ip6tables", "iptables")
	return netnstest.NewNS(t, "ipt")
}

// do runs f on a thread locked into the namespace; iptables commands it
// starts run there too.
func do(t *testing.T, n *netnstest.NS, f func() error) {
	t.Helper()
	if err := n.Do(f); err != nil {
		t.Fatal(err)
	}
}

// save returns `iptables -S` (ip6tables with v6) of the nat and filter
// tables as seen inside the namespace, each line prefixed by its table.
func save(t *testing.T, n *netnstest.NS, v6 bool) string {
	t.Helper()
	cmd := "iptables"
	if v6 {
		cmd = "ip6tables"
	}
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		out := n.MustExec(t, cmd, "-w", "-t", table, "-S")
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, "-N ") {
				fmt.Fprintf(&b, "%s %s\n", table, l)
			}
		}
	}
	return b.String()
}

// rootSave lists the root namespace's rules that are the manager's own (its
// chains, and jumps or comments naming them), IPv4 and IPv6. Other rules are
// left out: tests of other packages running at the same time (the lab's
// FORWARD rule) may change them.
func rootSave(t *testing.T) string {
	t.Helper()
	var own []string
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter"} {
			out, err := exec.Command(cmd, "-w", "-t", table, "-S").CombinedOutput()
			if err != nil {
				t.Fatalf("%s -t %s -S: %v\n%s", cmd, table, err, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "FLANNEL") || strings.Contains(l, "flanneld") {
					own = append(own, cmd+" "+table+" "+l)
				}
			}
		}
	}
	return strings.Join(own, "\n")
}

const wantV4 = `nat -N FLANNEL-POSTRTG
nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s 10.244.52.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.52.0/24 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.52.0/24 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
filter -N FLANNEL-FWD
filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
filter -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
filter -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
`

const wantV6 = `nat -N FLANNEL-POSTRTG
nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s fd00:0:0:34::/64 -d fd00::/56 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s fd00::/56 -d fd00:0:0:34::/64 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG ! -s fd00::/56 -d fd00:0:0:34::/64 -m comment --comment "flanneld masq" -j RETURN
nat -A FLANNEL-POSTRTG -s fd00::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
nat -A FLANNEL-POSTRTG ! -s fd00::/56 -d fd00::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
filter -N FLANNEL-FWD
filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
filter -A FLANNEL-FWD -s fd00::/56 -m comment --comment "flanneld forward" -j ACCEPT
filter -A FLANNEL-FWD -d fd00::/56 -m comment --comment "flanneld forward" -j ACCEPT
`

func v4Net() firewall.Net {
	return firewall.Net{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.52.1/24")}
}

func v6Net() firewall.Net {
	return firewall.Net{Network: netip.MustParsePrefix("fd00::/56"), Subnet: netip.MustParsePrefix("fd00:0:0:34::1/64")}
}

func v4Policy() firewall.Policy {
	return firewall.Policy{Masq: true, Forward: true, IPv4: v4Net()}
}

// newNSFirewall returns a Firewall whose iptables calls (both families)
// count writes; its methods must be called inside the namespace.
func newNSFirewall(t *testing.T) (*Firewall, *atomic.Int64) {
	t.Helper()
	var writes atomic.Int64
	fw := NewFirewallWith(func(f firewall.Family) (IPTables, error) {
		ipt, err := New(f)
		if err != nil {
			return nil, err
		}
		return &countingIPT{IPTables: ipt, writes: &writes}, nil
	}, nil)
	return fw, &writes
}

func TestEnsureExactAndIdempotent(t *testing.T) {
	n := newTestNS(t)
	before := rootSave(t)
	fw, writes := newNSFirewall(t)
	ctx := context.Background()
	do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
	if got := save(t, n, false); got != wantV4 {
		t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
	}
	if got := save(t, n, true); got != "" {
		t.Fatalf("ip6tables after an IPv4-only Ensure:\n%s\nwant nothing", got)
	}
	first := writes.Load()
	do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
	if got := save(t, n, false); got != wantV4 {
		t.Fatalf("after the second Ensure:\n%s\nwant:\n%s", got, wantV4)
	}
	if w := writes.Load() - first; w != 0 {
		t.Errorf("second Ensure wrote %d times, want 0 (list and compare only)", w)
	}
	if after := rootSave(t); after != before {
		t.Errorf("the root namespace's iptables changed:\n%s\nwas:\n%s", after, before)
	}
}

func TestEnsureDualStack(t *testing.T) {
	n := newTestNS(t)
	fw, _ := newNSFirewall(t)
	ctx := context.Background()
	p := v4Policy()
	p.IPv6 = v6Net()
	do(t, n, func() error { return fw.Ensure(ctx, p) })
	if got := save(t, n, false); got != wantV4 {
		t.Fatalf("iptables:\n%s\nwant:\n%s", got, wantV4)
	}
	if got := save(t, n, true); got != wantV6 {
		t.Fatalf("ip6tables:\n%s\nwant:\n%s", got, wantV6)
	}
	// IPv6 turned off: its chains go, IPv4's stay.
	do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
	if got := save(t, n, true); got != "" {
		t.Fatalf("ip6tables after IPv6 was turned off:\n%s\nwant nothing", got)
	}
	if got := save(t, n, false); got != wantV4 {
		t.Fatalf("iptables:\n%s\nwant:\n%s", got, wantV4)
	}
}

func TestEnsureRestores(t *testing.T) {
	tests := []struct {
		name   string
		damage []string // iptables arguments
	}{
		{"masq rule deleted", []string{"-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", "10.244.52.0/24", "-d", "10.244.0.0/16", "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN"}},
		{"jump deleted", []string{"-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"}},
		{"jump duplicated", []string{"-t", "nat", "-I", "POSTROUTING", "-j", "FLANNEL-POSTRTG"}},
		{"chain flushed", []string{"-t", "nat", "-F", "FLANNEL-POSTRTG"}},
		{"foreign rule added", []string{"-t", "filter", "-I", "FLANNEL-FWD", "-j", "DROP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNS(t)
			fw, _ := newNSFirewall(t)
			ctx := context.Background()
			do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
			n.MustExec(t, append([]string{"iptables", "-w"}, tt.damage...)...)
			if got := save(t, n, false); got == wantV4 {
				t.Fatal("damage did not change the rules")
			}
			do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
			if got := save(t, n, false); got != wantV4 {
				t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
			}
		})
	}
}

// TestKeeperRestoresWithinResync runs the agent's loop (firewall.Keeper)
// over the iptables mode.
func TestKeeperRestoresWithinResync(t *testing.T) {
	n := newTestNS(t)
	fw, _ := newNSFirewall(t)
	k := firewall.NewKeeper(fw, firewall.KeeperOptions{Period: 200 * time.Millisecond})
	if err := k.Set(v4Policy()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Do(func() error { return k.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, 5*time.Second, func() bool { return save(t, n, false) == wantV4 })
	n.MustExec(t, "iptables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG")
	waitFor(t, 5*time.Second, func() bool { return save(t, n, false) == wantV4 })

	// A new policy is applied at once, not at the next period.
	p := v4Policy()
	p.Forward = false
	if err := k.Set(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return !strings.Contains(save(t, n, false), "FLANNEL-FWD") })
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNetworkChangeRemovesOldRules(t *testing.T) {
	n := newTestNS(t)
	fw, _ := newNSFirewall(t)
	ctx := context.Background()
	do(t, n, func() error { return fw.Ensure(ctx, v4Policy()) })
	p := v4Policy()
	p.IPv4 = firewall.Net{Network: netip.MustParsePrefix("10.50.0.0/16"), Subnet: netip.MustParsePrefix("10.50.7.1/24")}
	do(t, n, func() error { return fw.Ensure(ctx, p) })
	want := strings.NewReplacer("10.244.52.0/24", "10.50.7.0/24", "10.244.0.0/16", "10.50.0.0/16").Replace(wantV4)
	if got := save(t, n, false); got != want {
		t.Fatalf("after the network change:\n%s\nwant:\n%s", got, want)
	}
}

func TestDisableAndRemove(t *testing.T) {
	n := newTestNS(t)
	fw, _ := newNSFirewall(t)
	ctx := context.Background()
	p := v4Policy()
	p.IPv6 = v6Net()
	do(t, n, func() error { return fw.Ensure(ctx, p) })

	noMasq := p
	noMasq.Masq = false
	do(t, n, func() error { return fw.Ensure(ctx, noMasq) })
	if got := save(t, n, false); strings.Contains(got, "FLANNEL-POSTRTG") || !strings.Contains(got, "FLANNEL-FWD") {
		t.Fatalf("with Masq off:\n%s", got)
	}

	do(t, n, func() error { return fw.Ensure(ctx, p) })
	do(t, n, func() error { return fw.Remove(ctx) })
	if got := save(t, n, false) + save(t, n, true); got != "" {
		t.Fatalf("after Remove:\n%s\nwant nothing", got)
	}
	// Removing nothing is fine.
	do(t, n, func() error { return fw.Remove(ctx) })

	// Nothing wanted: an Ensure removes what an earlier run left.
	do(t, n, func() error { return fw.Ensure(ctx, p) })
	do(t, n, func() error { return fw.Ensure(ctx, firewall.Policy{IPv4: v4Net()}) })
	if got := save(t, n, false) + save(t, n, true); got != "" {
		t.Fatalf("after an Ensure wanting no rules:\n%s\nwant nothing", got)
	}
}
