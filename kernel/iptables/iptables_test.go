package iptables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

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

func TestConfigValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"good", Config{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.1/24"), Masq: true}, true},
		{"off needs nothing", Config{}, true},
		{"outside", Config{Network: p("10.244.0.0/16"), Subnet: p("10.245.3.1/24"), Masq: true}, false},
		{"wider", Config{Network: p("10.244.0.0/16"), Subnet: p("10.244.0.0/8"), Forward: true}, false},
		{"families", Config{Network: p("10.244.0.0/16"), Subnet: p("fd00::/64"), Masq: true}, false},
		{"missing subnet", Config{Network: p("10.244.0.0/16"), Masq: true}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
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
	writes atomic.Int64
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

// testNS is a named network namespace of its own for one test, so that no
// test touches the root namespace's iptables.
type testNS struct {
	name string
	ns   ns.NetNS
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	netnstest.RequireTool(t, "iptables", "iptables")
	b := make([]byte, 4)
	rand.Read(b)
	name := "weft-ipt-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNS{name: name, ns: n}
}

// do runs f on a thread locked into the namespace; iptables commands it
// starts run there too.
func (n *testNS) do(t *testing.T, f func() error) {
	t.Helper()
	if err := n.ns.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// save returns `iptables -S` of both tables, as seen inside the namespace.
func (n *testNS) save(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("ip", "netns", "exec", n.name, "iptables", "-w", "-t", table, "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t %s -S in %s: %v: %s", table, n.name, err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.HasPrefix(l, "-A ") || (strings.HasPrefix(l, "-N ")) {
				fmt.Fprintf(&b, "%s %s\n", table, l)
			}
		}
	}
	return b.String()
}

// rootSave lists the root namespace's nat and filter rules that are the
// manager's own (its chains, and jumps or comments naming them). Other
// rules are left out: tests of other packages running at the same time
// (the lab's FORWARD rule) may change them.
func rootSave(t *testing.T) string {
	t.Helper()
	var own []string
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t %s -S: %v\n%s", table, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "FLANNEL") || strings.Contains(l, "flanneld") {
				own = append(own, table+" "+l)
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

func v4Config() Config {
	return Config{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.244.52.1/24"),
		Masq:    true, Forward: true,
	}
}

// newNSManager returns a Manager whose iptables calls count writes; its
// methods must be called inside n.do.
func newNSManager(t *testing.T, cfg Config) (*Manager, *countingIPT) {
	t.Helper()
	ipt, err := New(false)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingIPT{IPTables: ipt}
	m, err := NewManager(c, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

func TestEnsureExactAndIdempotent(t *testing.T) {
	n := newTestNS(t)
	before := rootSave(t)
	m, c := newNSManager(t, v4Config())
	ctx := context.Background()
	n.do(t, func() error { return m.Ensure(ctx) })
	if got := n.save(t); got != wantV4 {
		t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
	}
	first := c.writes.Load()
	n.do(t, func() error { return m.Ensure(ctx) })
	if got := n.save(t); got != wantV4 {
		t.Fatalf("after the second Ensure:\n%s\nwant:\n%s", got, wantV4)
	}
	if w := c.writes.Load() - first; w != 0 {
		t.Errorf("second Ensure wrote %d times, want 0 (list and compare only)", w)
	}
	if after := rootSave(t); after != before {
		t.Errorf("the root namespace's iptables changed:\n%s\nwas:\n%s", after, before)
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
			m, _ := newNSManager(t, v4Config())
			ctx := context.Background()
			n.do(t, func() error { return m.Ensure(ctx) })
			args := append([]string{"netns", "exec", n.name, "iptables", "-w"}, tt.damage...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("damaging: %v: %s", err, out)
			}
			if got := n.save(t); got == wantV4 {
				t.Fatal("damage did not change the rules")
			}
			n.do(t, func() error { return m.Ensure(ctx) })
			if got := n.save(t); got != wantV4 {
				t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
			}
		})
	}
}

func TestRunRestoresWithinResync(t *testing.T) {
	n := newTestNS(t)
	m, _ := newNSManager(t, v4Config())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.ns.Do(func(ns.NetNS) error { return m.Run(ctx, 200*time.Millisecond) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, 5*time.Second, func() bool { return n.save(t) == wantV4 })
	out, err := exec.Command("ip", "netns", "exec", n.name, "iptables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG").CombinedOutput()
	if err != nil {
		t.Fatalf("flushing: %v: %s", err, out)
	}
	waitFor(t, 5*time.Second, func() bool { return n.save(t) == wantV4 })

	// A new config is applied at once, not at the next period.
	cfg := v4Config()
	cfg.Forward = false
	if err := m.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return !strings.Contains(n.save(t), "FLANNEL-FWD") })
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
	m, _ := newNSManager(t, v4Config())
	ctx := context.Background()
	n.do(t, func() error { return m.Ensure(ctx) })
	e := NetworkEnsurer{M: m}
	n.do(t, func() error {
		return e.Ensure(ctx, netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.50.7.1/24"))
	})
	want := strings.NewReplacer("10.244.52.0/24", "10.50.7.0/24", "10.244.0.0/16", "10.50.0.0/16").Replace(wantV4)
	if got := n.save(t); got != want {
		t.Fatalf("after the network change:\n%s\nwant:\n%s", got, want)
	}
}

func TestDisableAndTeardown(t *testing.T) {
	n := newTestNS(t)
	m, _ := newNSManager(t, v4Config())
	ctx := context.Background()
	n.do(t, func() error { return m.Ensure(ctx) })

	cfg := v4Config()
	cfg.Masq = false
	if err := m.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	n.do(t, func() error { return m.Ensure(ctx) })
	if got := n.save(t); strings.Contains(got, "FLANNEL-POSTRTG") || !strings.Contains(got, "FLANNEL-FWD") {
		t.Fatalf("with Masq off:\n%s", got)
	}

	if err := m.SetConfig(v4Config()); err != nil {
		t.Fatal(err)
	}
	n.do(t, func() error { return m.Ensure(ctx) })
	n.do(t, func() error { return m.Teardown(ctx) })
	if got := n.save(t); got != "" {
		t.Fatalf("after Teardown:\n%s\nwant nothing", got)
	}
	// Teardown of nothing is fine.
	n.do(t, func() error { return m.Teardown(ctx) })
}
