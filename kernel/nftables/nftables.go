// Package nftables is the nftables mode of the firewall seam (flannel's
// EnableNFTables): the firewall package's policy rendered as nftables rules
// and kept through sigs.k8s.io/knftables, which runs the nft command.
//
// Each family has a table of its own, named and commented as flannel names
// them:
//
//	table ip  flannel-ipv4   (IPv4)
//	table ip6 flannel-ipv6   (IPv6, only while IPv6 is on)
//	  chain forward  type filter hook forward     priority filter  (forward rules)
//	  chain postrtg  type nat    hook postrouting priority srcnat  (masquerade rules)
//
// The tables are Weft's alone, so a table is written whole, in one nft
// transaction (the kernel applies it atomically: no packet sees a half-built
// table): the old table is destroyed and the new one added. The check at
// every resync lists the table and compares the listing with the one taken
// right after Weft last wrote it; a table deleted, flushed or edited by hand
// lists differently and is written again (so is a table found at start, an
// earlier run's or flanneld's: the first check replaces it). Comparing with
// nft's own listing, rather than with a rendering of ours, keeps the check
// independent of how a given nft version prints rules. (The listing is taken
// by a second nft call right after the write; an edit landing in between
// would be taken for Weft's own until the policy changes.) Nothing outside
// the two tables is read or touched.
package nftables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/weftnet/weft/firewall"
)

// Tables, chains and comments, as flannel names them.
const (
	TableIPv4      = "flannel-ipv4"
	TableIPv6      = "flannel-ipv6"
	ChainForward   = "forward"
	ChainPostrtg   = "postrtg"
	CommentForward = "chain to accept flannel traffic"
	CommentPostrtg = "chain to manage traffic masquerading by flannel"
)

// TableName returns the name of a family's table.
func TableName(f firewall.Family) string {
	if f == firewall.IPv6 {
		return TableIPv6
	}
	return TableIPv4
}

// Family returns the nftables family of a family's table: ip or ip6.
func Family(f firewall.Family) knftables.Family {
	if f == firewall.IPv6 {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// Rule renders one rule of the policy in nft's syntax for family f, e.g.
// "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random".
// The mark is matched under its mask, as iptables' --mark 0x4000/0x4000.
func Rule(f firewall.Family, r firewall.Rule) string {
	fam := string(Family(f))
	var w []string
	if r.Mark != 0 {
		w = append(w, "meta", "mark", "&", fmt.Sprintf("%#x", r.Mark), "==", fmt.Sprintf("%#x", r.Mark))
	}
	addr := func(field string, p netip.Prefix, not bool) {
		if !p.IsValid() {
			return
		}
		w = append(w, fam, field)
		if not {
			w = append(w, "!=")
		}
		w = append(w, p.String())
	}
	addr("saddr", r.Src, r.NotSrc)
	addr("daddr", r.Dst, r.NotDst)
	switch r.Action {
	case firewall.Accept:
		w = append(w, "accept")
	case firewall.Masquerade:
		w = append(w, "masquerade", "fully-random")
	default:
		w = append(w, "return")
	}
	return strings.Join(w, " ")
}

// table is what the Firewall knows of one family's table.
type table struct {
	nft     knftables.Interface // opened on first use
	script  string              // the transaction last written
	listing string              // `nft list table` right after it
	off     bool                // the family is off and its table was removed
}

// Firewall keeps the flannel-ipv4 and flannel-ipv6 tables. It is safe for
// concurrent use. Its methods act in the network namespace of the calling
// thread (the nft processes inherit it).
type Firewall struct {
	nftPath string
	log     *slog.Logger

	mu     sync.Mutex // serializes Ensure and Remove; guards tables
	tables map[firewall.Family]*table
}

var _ firewall.Firewall = (*Firewall)(nil)

// New returns the nftables mode of the host. It fails, wrapping
// firewall.ErrNotInstalled, when the nft command is missing. A nil logger
// discards.
func New(log *slog.Logger) (*Firewall, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nft: %w (apt-get install nftables)", firewall.ErrNotInstalled)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fw := &Firewall{nftPath: path, log: log, tables: map[firewall.Family]*table{}}
	for _, f := range firewall.Families {
		fw.tables[f] = &table{}
	}
	return fw, nil
}

// open returns knftables for family f's table. EmulateDestroy: nft before
// 1.0.8 (Debian bookworm has 1.0.6) has no `destroy`; knftables then
// emulates it with an add and a delete in the same transaction.
func (fw *Firewall) open(f firewall.Family) (knftables.Interface, error) {
	t := fw.tables[f]
	if t.nft != nil {
		return t.nft, nil
	}
	nft, err := knftables.New(Family(f), TableName(f), knftables.EmulateDestroy)
	if err != nil {
		return nil, fmt.Errorf("nftables table %s %s: %w", Family(f), TableName(f), err)
	}
	t.nft = nft
	return nft, nil
}

// Ensure makes each family's table hold exactly p's chains and rules; a
// family that is off or wants no rule has its table removed (once, and
// again after it was on). When every table lists as Weft last wrote it,
// Ensure writes nothing.
func (fw *Firewall) Ensure(ctx context.Context, p firewall.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var errs []error
	for _, f := range firewall.Families {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fw.ensureTable(ctx, f, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (fw *Firewall) ensureTable(ctx context.Context, f firewall.Family, p firewall.Policy) error {
	t := fw.tables[f]
	if !p.Wants(f) {
		if t.off {
			return nil
		}
		if err := fw.destroy(ctx, f); err != nil {
			return err
		}
		t.off = true
		return nil
	}
	t.off = false
	nft, err := fw.open(f)
	if err != nil {
		return err
	}
	tx := writeTx(nft, f, p)
	script := tx.String()
	listing, exists, err := fw.list(ctx, f)
	if err != nil {
		return err
	}
	reason := ""
	switch {
	case !exists:
		reason = "missing"
	case t.script == "":
		reason = "first check since start" // an earlier run's or flanneld's table
	case script != t.script:
		reason = "policy changed"
	case listing != t.listing:
		reason = "changed outside weft"
	default:
		return nil
	}
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("writing nftables table %s %s: %w", Family(f), TableName(f), err)
	}
	t.script, t.listing = script, ""
	if t.listing, _, err = fw.list(ctx, f); err != nil {
		return err
	}
	fw.log.Info("nftables table written", "table", TableName(f), "family", string(Family(f)), "reason", reason,
		"masq", p.Masq, "forward", p.Forward, "network", p.Net(f).Network)
	return nil
}

// writeTx is the transaction that replaces family f's table with p's.
func writeTx(nft knftables.Interface, f firewall.Family, p firewall.Policy) *knftables.Transaction {
	n := p.Net(f)
	tx := nft.NewTransaction()
	tx.Destroy(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for " + TableName(f))})
	if p.Forward {
		tx.Add(&knftables.Chain{
			Name:     ChainForward,
			Comment:  knftables.PtrTo(CommentForward),
			Type:     knftables.PtrTo(knftables.FilterType),
			Hook:     knftables.PtrTo(knftables.ForwardHook),
			Priority: knftables.PtrTo(knftables.FilterPriority),
		})
		for _, r := range firewall.ForwardRules(n) {
			tx.Add(&knftables.Rule{Chain: ChainForward, Rule: Rule(f, r)})
		}
	}
	if p.Masq {
		tx.Add(&knftables.Chain{
			Name:     ChainPostrtg,
			Comment:  knftables.PtrTo(CommentPostrtg),
			Type:     knftables.PtrTo(knftables.NATType),
			Hook:     knftables.PtrTo(knftables.PostroutingHook),
			Priority: knftables.PtrTo(knftables.SNATPriority),
		})
		for _, r := range firewall.MasqRules(n) {
			tx.Add(&knftables.Rule{Chain: ChainPostrtg, Rule: Rule(f, r)})
		}
	}
	return tx
}

// Remove deletes both tables (for a switch to iptables and for `weft node
// teardown`). Missing tables are fine.
func (fw *Firewall) Remove(ctx context.Context) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var errs []error
	for _, f := range firewall.Families {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fw.destroy(ctx, f); err != nil {
			errs = append(errs, err)
		}
		fw.tables[f].off = false
	}
	return errors.Join(errs...)
}

// destroy deletes family f's table if it is there.
func (fw *Firewall) destroy(ctx context.Context, f firewall.Family) error {
	nft, err := fw.open(f)
	if err != nil {
		return err
	}
	_, exists, err := fw.list(ctx, f)
	if err != nil || !exists {
		return err
	}
	tx := nft.NewTransaction()
	tx.Destroy(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("deleting nftables table %s %s: %w", Family(f), TableName(f), err)
	}
	t := fw.tables[f]
	t.script, t.listing = "", ""
	fw.log.Info("nftables table deleted", "table", TableName(f), "family", string(Family(f)))
	return nil
}

// list returns `nft list table <family> <name>`; exists is false (and the
// error nil) when the table is not there.
func (fw *Firewall) list(ctx context.Context, f firewall.Family) (listing string, exists bool, err error) {
	cmd := exec.CommandContext(ctx, fw.nftPath, "list", "table", string(Family(f)), TableName(f))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// nft does not localize its messages.
		if strings.Contains(stderr.String(), "No such file or directory") {
			return "", false, nil
		}
		return "", false, fmt.Errorf("nft list table %s %s: %w: %s", Family(f), TableName(f), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), true, nil
}

// Check reports how the tables differ from p, one line per finding (a table
// or chain missing, a chain of another hook, a chain's rules not p's, a
// table or chain p does not want); none when they hold p's rules. It writes
// nothing and keeps no state, so a process other than the agent (`weft
// doctor`) can ask. Rules compare word by word as nft lists them (counters
// left out), numbers by value: nft lists the mark 0x4000 as 0x00004000.
func (fw *Firewall) Check(ctx context.Context, p firewall.Policy) ([]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var out []string
	for _, f := range firewall.Families {
		name := string(Family(f)) + " " + TableName(f)
		listing, exists, err := fw.list(ctx, f)
		if err != nil {
			return nil, err
		}
		switch {
		case !p.Wants(f) && exists:
			out = append(out, fmt.Sprintf("table %s is present, but %s wants no rule (%s off, or masquerade and forward rules off)", name, f, f))
			continue
		case !p.Wants(f):
			continue
		case !exists:
			out = append(out, fmt.Sprintf("table %s is missing", name))
			continue
		}
		have := listedChains(listing)
		n := p.Net(f)
		for _, c := range []struct {
			on         bool
			name, hook string
			rules      []firewall.Rule
		}{
			{p.Forward, ChainForward, "forward", firewall.ForwardRules(n)},
			{p.Masq, ChainPostrtg, "postrouting", firewall.MasqRules(n)},
		} {
			lc, ok := have[c.name]
			delete(have, c.name)
			switch {
			case !c.on && ok:
				out = append(out, fmt.Sprintf("chain %s %s is present, but its rules are off", name, c.name))
				continue
			case !c.on:
				continue
			case !ok:
				out = append(out, fmt.Sprintf("chain %s %s is missing", name, c.name))
				continue
			case lc.hook != c.hook:
				out = append(out, fmt.Sprintf("chain %s %s hooks %q, want %q", name, c.name, lc.hook, c.hook))
			}
			want := make([]string, len(c.rules))
			for i, r := range c.rules {
				want[i] = Rule(f, r)
			}
			if d := firewall.FirstDiff(lc.rules, want, sameRule); d != "" {
				out = append(out, fmt.Sprintf("chain %s %s is not current: has %d rules, want %d (%s)", name, c.name, len(lc.rules), len(want), d))
			}
		}
		for extra := range have {
			out = append(out, fmt.Sprintf("table %s has a chain %s that Weft does not make", name, extra))
		}
	}
	return out, nil
}

// listedChain is one chain of an `nft list table` listing.
type listedChain struct {
	hook  string   // "forward", or "" for a regular chain
	rules []string // as listed, counters left out
}

// listedChains reads the chains of an `nft list table` listing.
func listedChains(listing string) map[string]listedChain {
	chains := map[string]listedChain{}
	var cur string
	var c listedChain
	for _, l := range strings.Split(listing, "\n") {
		w := strings.Fields(l)
		switch {
		case len(w) == 0:
		case len(w) == 3 && w[0] == "chain" && w[2] == "{":
			cur, c = w[1], listedChain{}
		case cur == "":
		case w[0] == "}":
			chains[cur] = c
			cur = ""
		case w[0] == "comment":
		case w[0] == "type":
			for i := range len(w) - 1 {
				if w[i] == "hook" {
					c.hook = w[i+1]
				}
			}
		default:
			c.rules = append(c.rules, strings.Join(withoutCounter(w), " "))
		}
	}
	return chains
}

// withoutCounter drops "counter" and "counter packets N bytes M".
func withoutCounter(w []string) []string {
	out := w[:0:0]
	for i := 0; i < len(w); i++ {
		if w[i] == "counter" {
			if i+4 < len(w) && w[i+1] == "packets" && w[i+3] == "bytes" {
				i += 4
			}
			continue
		}
		out = append(out, w[i])
	}
	return out
}

// sameRule compares two rules word by word, numbers by value.
func sameRule(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] == y[i] {
			continue
		}
		m, err1 := strconv.ParseUint(x[i], 0, 64)
		n, err2 := strconv.ParseUint(y[i], 0, 64)
		if err1 != nil || err2 != nil || m != n {
			return false
		}
	}
	return true
}
