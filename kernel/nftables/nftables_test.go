package nftables

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/test/netnstest"
)

func TestRule(t *testing.T) {
	n4 := firewall.Net{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.52.1/24")}
	n6 := firewall.Net{Network: netip.MustParsePrefix("fd00::/56"), Subnet: netip.MustParsePrefix("fd00:0:0:34::1/64")}
	tests := []struct {
		name string
		f    firewall.Family
		got  []firewall.Rule
		want []string
	}{
		{"masq v4", firewall.IPv4, firewall.MasqRules(n4), []string{
			"meta mark & 0x4000 == 0x4000 return",
			"ip saddr 10.244.52.0/24 ip daddr 10.244.0.0/16 return",
			"ip saddr 10.244.0.0/16 ip daddr 10.244.52.0/24 return",
			"ip saddr != 10.244.0.0/16 ip daddr 10.244.52.0/24 return",
			"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
			"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
		}},
		{"forward v4", firewall.IPv4, firewall.ForwardRules(n4), []string{
			"ip saddr 10.244.0.0/16 accept",
			"ip daddr 10.244.0.0/16 accept",
		}},
		{"masq v6", firewall.IPv6, firewall.MasqRules(n6), []string{
			"meta mark & 0x4000 == 0x4000 return",
			"ip6 saddr fd00:0:0:34::/64 ip6 daddr fd00::/56 return",
			"ip6 saddr fd00::/56 ip6 daddr fd00:0:0:34::/64 return",
			"ip6 saddr != fd00::/56 ip6 daddr fd00:0:0:34::/64 return",
			"ip6 saddr fd00::/56 ip6 daddr != ff00::/8 masquerade fully-random",
			"ip6 saddr != fd00::/56 ip6 daddr fd00::/56 masquerade fully-random",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.got) != len(tt.want) {
				t.Fatalf("%d rules, want %d", len(tt.got), len(tt.want))
			}
			for i, r := range tt.got {
				if s := Rule(tt.f, r); s != tt.want[i] {
					t.Errorf("rule %d: %q, want %q", i, s, tt.want[i])
				}
			}
		})
	}
}

// The tables as nft 1.0.6 (Debian bookworm) lists them.
const wantV4 = `table ip flannel-ipv4 {
	comment "rules for flannel-ipv4"
	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
		ip daddr 10.244.0.0/16 accept
	}

	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip saddr 10.244.52.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.52.0/24 return
		ip saddr != 10.244.0.0/16 ip daddr 10.244.52.0/24 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
	}
}
`

const wantV6 = `table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip6 saddr fd00::/56 accept
		ip6 daddr fd00::/56 accept
	}

	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip6 saddr fd00:0:0:34::/64 ip6 daddr fd00::/56 return
		ip6 saddr fd00::/56 ip6 daddr fd00:0:0:34::/64 return
		ip6 saddr != fd00::/56 ip6 daddr fd00:0:0:34::/64 return
		ip6 saddr fd00::/56 ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != fd00::/56 ip6 daddr fd00::/56 masquerade fully-random
	}
}
`

// foreign is another program's table; no operation may change it.
const foreign = `table inet weft-test-foreign {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 192.0.2.0/24 counter packets 0 bytes 0 drop
	}

	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 198.51.100.0/24 return
	}
}
`

// foreignIPT are another program's iptables rules in the built-in chains
// Weft's iptables mode jumps from.
var foreignIPT = [][]string{
	{"-t", "filter", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP"},
	{"-t", "nat", "-A", "POSTROUTING", "-s", "198.51.100.0/24", "-j", "RETURN"},
}

func v4Net() firewall.Net {
	return firewall.Net{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.52.1/24")}
}

func v6Net() firewall.Net {
	return firewall.Net{Network: netip.MustParsePrefix("fd00::/56"), Subnet: netip.MustParsePrefix("fd00:0:0:34::1/64")}
}

func v4Policy() firewall.Policy { return firewall.Policy{Masq: true, Forward: true, IPv4: v4Net()} }

func dualPolicy() firewall.Policy {
	p := v4Policy()
	p.IPv6 = v6Net()
	return p
}

// fixture is a namespace holding another program's nftables table and
// iptables rules, with the nftables mode to test in it.
type fixture struct {
	t   *testing.T
	ns  *netnstest.NS
	fw  *Firewall
	ipt string // iptables -S of the foreign rules, as first listed
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	netnstest.RequireTool(t, "nft", "nftables")
	netnstest.RequireTool(t, "iptables", "iptables")
	netnstest.RequireTool(t, "ip6tables", "iptables")
	before := rootRuleset(t)
	t.Cleanup(func() {
		if after := rootRuleset(t); after != before {
			t.Errorf("the root namespace's flannel tables changed:\n%s\nwas:\n%s", after, before)
		}
	})
	x := &fixture{t: t, ns: netnstest.NewNS(t, "nft")}
	path := filepath.Join(t.TempDir(), "foreign.nft")
	if err := os.WriteFile(path, []byte(foreign), 0o600); err != nil {
		t.Fatal(err)
	}
	x.ns.MustExec(t, "nft", "-f", path)
	for _, r := range foreignIPT {
		x.ns.MustExec(t, append([]string{"iptables", "-w"}, r...)...)
	}
	x.ipt = x.iptablesSave()
	fw, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	x.fw = fw
	x.checkForeign()
	return x
}

// do runs f inside the namespace.
func (x *fixture) do(f func() error) {
	x.t.Helper()
	if err := x.ns.Do(f); err != nil {
		x.t.Fatal(err)
	}
}

func (x *fixture) ensure(p firewall.Policy) {
	x.t.Helper()
	x.do(func() error { return x.fw.Ensure(context.Background(), p) })
}

// table lists one table ("" when it is not there); with handles, each
// rule carries its handle, which changes when the rule is written again.
func (x *fixture) table(family, name string, handles bool) string {
	x.t.Helper()
	args := []string{"nft", "list", "table", family, name}
	if handles {
		args = []string{"nft", "-a", "list", "table", family, name}
	}
	out, err := x.ns.Exec(args...)
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return ""
		}
		x.t.Fatal(err)
	}
	return out
}

func (x *fixture) v4() string { return x.table("ip", TableIPv4, false) }
func (x *fixture) v6() string { return x.table("ip6", TableIPv6, false) }

// iptablesSave returns `iptables -S` and `ip6tables -S` of nat and filter.
func (x *fixture) iptablesSave() string {
	x.t.Helper()
	var b strings.Builder
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter"} {
			b.WriteString(x.ns.MustExec(x.t, cmd, "-w", "-t", table, "-S"))
		}
	}
	return b.String()
}

// checkForeign fails the test if the other program's table or iptables
// rules changed.
func (x *fixture) checkForeign() {
	x.t.Helper()
	if got := x.table("inet", "weft-test-foreign", false); got != foreign {
		x.t.Fatalf("the foreign table changed:\n%s\nwant:\n%s", got, foreign)
	}
	if got := x.iptablesSave(); !strings.Contains(got, "-A FORWARD -s 192.0.2.0/24 -j DROP") ||
		!strings.Contains(got, "-A POSTROUTING -s 198.51.100.0/24 -j RETURN") {
		x.t.Fatalf("the foreign iptables rules changed:\n%s", got)
	}
}

// rootRuleset returns the root namespace's tables that Weft could have
// made (flannel-*). Other programs' tables are left out: the lab adds a rule
// in the root namespace while it runs, and packages may run in parallel.
func rootRuleset(t *testing.T) string {
	out, err := netnstest.Run("nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "flannel") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestEnsureGoldenAndIdempotent(t *testing.T) {
	x := newFixture(t)
	x.ensure(v4Policy())
	if got := x.v4(); got != wantV4 {
		t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
	}
	if got := x.v6(); got != "" {
		t.Fatalf("an IPv4-only Ensure made an IPv6 table:\n%s", got)
	}
	withHandles := x.table("ip", TableIPv4, true)
	for range 2 {
		x.ensure(v4Policy())
	}
	if got := x.table("ip", TableIPv4, true); got != withHandles {
		t.Fatalf("Ensure over a table in place rewrote it:\n%s\nwas:\n%s", got, withHandles)
	}
	x.checkForeign()
}

func TestEnsureDualStack(t *testing.T) {
	x := newFixture(t)
	x.ensure(dualPolicy())
	if got := x.v4(); got != wantV4 {
		t.Fatalf("IPv4 table:\n%s\nwant:\n%s", got, wantV4)
	}
	if got := x.v6(); got != wantV6 {
		t.Fatalf("IPv6 table:\n%s\nwant:\n%s", got, wantV6)
	}
	x.checkForeign()
	// IPv6 turned off: its table goes, IPv4's stays as it was.
	withHandles := x.table("ip", TableIPv4, true)
	x.ensure(v4Policy())
	if got := x.v6(); got != "" {
		t.Fatalf("IPv6 table after IPv6 was turned off:\n%s", got)
	}
	if got := x.table("ip", TableIPv4, true); got != withHandles {
		t.Fatalf("turning IPv6 off rewrote the IPv4 table:\n%s\nwas:\n%s", got, withHandles)
	}
	x.checkForeign()
}

// handleOf returns the handle of the first rule of a listing (nft -a)
// containing substr.
func handleOf(t *testing.T, listing, substr string) string {
	t.Helper()
	for _, l := range strings.Split(listing, "\n") {
		if strings.Contains(l, substr) {
			if m := regexp.MustCompile(`# handle (\d+)`).FindStringSubmatch(l); m != nil {
				return m[1]
			}
		}
	}
	t.Fatalf("no rule with %q in:\n%s", substr, listing)
	return ""
}

// damages are changes made by hand to the IPv4 table Ensure wrote (an nft
// command each).
var damages = []struct {
	name   string
	damage func(x *fixture) []string // an nft command
}{
	{"table deleted", func(*fixture) []string { return []string{"delete", "table", "ip", TableIPv4} }},
	{"table flushed", func(*fixture) []string { return []string{"flush", "table", "ip", TableIPv4} }},
	{"chain flushed", func(*fixture) []string { return []string{"flush", "chain", "ip", TableIPv4, ChainPostrtg} }},
	{"chain deleted", func(*fixture) []string {
		return []string{"delete", "chain", "ip", TableIPv4, ChainForward}
	}},
	{"rule deleted", func(x *fixture) []string {
		h := handleOf(x.t, x.table("ip", TableIPv4, true), "ip daddr != 224.0.0.0/4 masquerade")
		return []string{"delete", "rule", "ip", TableIPv4, ChainPostrtg, "handle", h}
	}},
	{"rule replaced", func(x *fixture) []string {
		h := handleOf(x.t, x.table("ip", TableIPv4, true), "ip saddr 10.244.0.0/16 accept")
		return []string{"replace", "rule", "ip", TableIPv4, ChainForward, "handle", h, "ip", "saddr", "10.244.0.0/16", "drop"}
	}},
	{"foreign rule added", func(*fixture) []string {
		return []string{"insert", "rule", "ip", TableIPv4, ChainForward, "drop"}
	}},
	{"chain added", func(*fixture) []string { return []string{"add", "chain", "ip", TableIPv4, "extra"} }},
}

func TestEnsureRestores(t *testing.T) {
	tests := damages
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newFixture(t)
			x.ensure(v4Policy())
			x.ns.MustExec(t, append([]string{"nft"}, tt.damage(x)...)...)
			if got := x.v4(); got == wantV4 {
				t.Fatal("the damage did not change the table")
			}
			x.ensure(v4Policy())
			if got := x.v4(); got != wantV4 {
				t.Fatalf("after Ensure:\n%s\nwant:\n%s", got, wantV4)
			}
			x.checkForeign()
		})
	}
}

func TestPolicyChanges(t *testing.T) {
	x := newFixture(t)
	x.ensure(dualPolicy())

	p := dualPolicy()
	p.IPv4 = firewall.Net{Network: netip.MustParsePrefix("10.50.0.0/16"), Subnet: netip.MustParsePrefix("10.50.7.1/24")}
	x.ensure(p)
	want := strings.NewReplacer("10.244.52.0/24", "10.50.7.0/24", "10.244.0.0/16", "10.50.0.0/16").Replace(wantV4)
	if got := x.v4(); got != want {
		t.Fatalf("after the network change:\n%s\nwant:\n%s", got, want)
	}

	p.Masq = false
	x.ensure(p)
	if got := x.v4(); strings.Contains(got, ChainPostrtg) || !strings.Contains(got, "chain "+ChainForward) {
		t.Fatalf("with Masq off:\n%s", got)
	}
	p.Masq, p.Forward = true, false
	x.ensure(p)
	if got := x.v6(); strings.Contains(got, "chain "+ChainForward) || !strings.Contains(got, ChainPostrtg) {
		t.Fatalf("with Forward off:\n%s", got)
	}

	// Nothing wanted: both tables go.
	p.Masq = false
	x.ensure(p)
	if got := x.v4() + x.v6(); got != "" {
		t.Fatalf("with no rule wanted:\n%s", got)
	}
	x.checkForeign()
}

func TestRemove(t *testing.T) {
	x := newFixture(t)
	x.ensure(dualPolicy())
	x.do(func() error { return x.fw.Remove(context.Background()) })
	if got := x.v4() + x.v6(); got != "" {
		t.Fatalf("after Remove:\n%s", got)
	}
	x.do(func() error { return x.fw.Remove(context.Background()) }) // nothing to remove
	x.checkForeign()
	// After a Remove, Ensure puts the tables back.
	x.ensure(dualPolicy())
	if x.v4() != wantV4 || x.v6() != wantV6 {
		t.Fatalf("after Remove and Ensure:\n%s%s", x.v4(), x.v6())
	}
}

// TestKeeperRestoresWithinResync runs the agent's loop (firewall.Keeper)
// over the nftables mode.
func TestKeeperRestoresWithinResync(t *testing.T) {
	x := newFixture(t)
	k := firewall.NewKeeper(x.fw, firewall.KeeperOptions{Period: 200 * time.Millisecond})
	if err := k.Set(v4Policy()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.ns.Do(func() error { return k.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, func() bool { return x.v4() == wantV4 })
	x.ns.MustExec(t, "nft", "flush", "table", "ip", TableIPv4)
	waitFor(t, func() bool { return x.v4() == wantV4 })
	x.ns.MustExec(t, "nft", "delete", "table", "ip", TableIPv4)
	waitFor(t, func() bool { return x.v4() == wantV4 })

	// A new policy is applied at once, not at the next period.
	p := v4Policy()
	p.Forward = false
	if err := k.Set(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !strings.Contains(x.v4(), "chain "+ChainForward) })
	x.checkForeign()
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheck: Check finds no difference in the tables Ensure wrote, and one
// for each hand-made damage, a missing table, a family's table Ensure would
// remove and a policy that changed; it writes nothing.
func TestCheck(t *testing.T) {
	x := newFixture(t)
	check := func(p firewall.Policy) []string {
		t.Helper()
		var found []string
		x.do(func() (err error) {
			found, err = x.fw.Check(context.Background(), p)
			return err
		})
		return found
	}
	if got := check(v4Policy()); len(got) != 1 || !strings.Contains(got[0], "table ip flannel-ipv4 is missing") {
		t.Fatalf("before Ensure: %q", got)
	}
	x.ensure(v4Policy())
	if got := check(v4Policy()); len(got) != 0 {
		t.Fatalf("after Ensure: %q", got)
	}
	if got := check(dualPolicy()); len(got) != 1 || !strings.Contains(got[0], "table ip6 flannel-ipv6 is missing") {
		t.Errorf("IPv6 turned on: %q", got)
	}
	moved := v4Policy()
	moved.IPv4.Subnet = netip.MustParsePrefix("10.244.53.1/24")
	if got := check(moved); len(got) != 1 || !strings.Contains(got[0], "chain ip flannel-ipv4 postrtg is not current") || !strings.Contains(got[0], "10.244.53.0/24") {
		t.Errorf("subnet changed: %q", got)
	}
	noMasq := v4Policy()
	noMasq.Masq = false
	if got := check(noMasq); len(got) != 1 || !strings.Contains(got[0], "postrtg is present") {
		t.Errorf("masquerade turned off: %q", got)
	}
	if got := check(firewall.Policy{Masq: true, Forward: true}); len(got) != 1 || !strings.Contains(got[0], "is present, but IPv4 wants no rule") {
		t.Errorf("IPv4 off: %q", got)
	}
	for _, d := range damages {
		x.ns.MustExec(t, append([]string{"nft"}, d.damage(x)...)...)
		if got := check(v4Policy()); len(got) == 0 {
			t.Errorf("%s: Check found nothing in\n%s", d.name, x.v4())
		} else {
			t.Logf("%s: %q", d.name, got)
		}
		x.ensure(v4Policy())
		if got := check(v4Policy()); len(got) != 0 {
			t.Errorf("%s, restored: %q", d.name, got)
		}
	}
	// Check wrote nothing: the last table Ensure wrote is as it was
	// (handles included) after a last Check.
	after := x.table("ip", TableIPv4, true)
	check(v4Policy())
	if got := x.table("ip", TableIPv4, true); got != after {
		t.Errorf("Check changed the table:\n%s\nwas:\n%s", got, after)
	}
	x.checkForeign()
}
