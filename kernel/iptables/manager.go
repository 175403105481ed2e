package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/weftnet/weft/firewall"
)

// IPTables is the part of go-iptables' *iptables.IPTables that the Firewall
// uses. Implementations run each call against one address family of one
// network namespace.
type IPTables interface {
	// List returns the chain as `iptables -t table -S chain` prints it.
	List(table, chain string) ([]string, error)
	// ChainExists reports whether the chain exists in the table.
	ChainExists(table, chain string) (bool, error)
	// NewChain creates an empty chain; it fails if the chain exists.
	NewChain(table, chain string) error
	// ClearChain flushes the chain, creating it if it is missing.
	ClearChain(table, chain string) error
	// Append appends a rule to the chain.
	Append(table, chain string, rulespec ...string) error
	// Delete deletes the first rule of the chain matching rulespec.
	Delete(table, chain string, rulespec ...string) error
	// DeleteChain deletes an empty chain that nothing jumps to.
	DeleteChain(table, chain string) error
}

var _ IPTables = (*goipt.IPTables)(nil)

// LockWait is how long an iptables command waits for the xtables lock
// (`iptables -w`) before failing.
const LockWait = 10 * time.Second

// New returns go-iptables for one family, running iptables (ip6tables)
// with -w so that concurrent callers such as kube-proxy wait for each other
// instead of failing. When the command is missing the error wraps
// firewall.ErrNotInstalled.
func New(f firewall.Family) (*goipt.IPTables, error) {
	proto, cmd := goipt.ProtocolIPv4, "iptables"
	if f == firewall.IPv6 {
		proto, cmd = goipt.ProtocolIPv6, "ip6tables"
	}
	if _, err := exec.LookPath(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w (apt-get install iptables)", cmd, firewall.ErrNotInstalled)
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Timeout(int(LockWait/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", cmd, err)
	}
	return ipt, nil
}

// chainSet is one of our chains with the jump rule that reaches it.
type chainSet struct {
	table, parent, chain, comment string
}

var (
	masqSet = chainSet{TableNAT, ChainPost, ChainMasq, CommentMasq}
	fwdSet  = chainSet{TableFilter, ChainForward, ChainFwd, CommentFwd}
)

// Firewall keeps flanneld's chains in iptables (IPv4) and ip6tables (IPv6):
// the iptables mode of the firewall seam. It is safe for concurrent use.
type Firewall struct {
	open func(firewall.Family) (IPTables, error)
	log  *slog.Logger

	mu     sync.Mutex // serializes Ensure and Remove; guards the rest
	ipt    map[firewall.Family]IPTables
	offSet map[firewall.Family]bool // the family is off and its chains were removed
}

var _ firewall.Firewall = (*Firewall)(nil)

// NewFirewall returns the iptables mode of the host (of the calling
// thread's network namespace, when its methods run). It fails, wrapping
// firewall.ErrNotInstalled, when iptables is missing; ip6tables is looked
// for only when an IPv6 rule is to be written or removed. A nil logger
// discards.
func NewFirewall(log *slog.Logger) (*Firewall, error) {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil, fmt.Errorf("iptables: %w (apt-get install iptables)", firewall.ErrNotInstalled)
	}
	return NewFirewallWith(func(f firewall.Family) (IPTables, error) { return New(f) }, log), nil
}

// NewFirewallWith returns a Firewall that runs its iptables calls through
// what open returns for each family (opened on first use, then kept).
func NewFirewallWith(open func(firewall.Family) (IPTables, error), log *slog.Logger) *Firewall {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Firewall{open: open, log: log, ipt: map[firewall.Family]IPTables{}, offSet: map[firewall.Family]bool{}}
}

func (fw *Firewall) family(f firewall.Family) (IPTables, error) {
	if ipt := fw.ipt[f]; ipt != nil {
		return ipt, nil
	}
	ipt, err := fw.open(f)
	if err != nil {
		return nil, err
	}
	fw.ipt[f] = ipt
	return ipt, nil
}

// Ensure makes both families hold exactly p's chains: each wanted chain
// exists with exactly the wanted rules in order (rewritten whole when its
// content differs, which also removes an old network's rules), and is
// reached by exactly one jump rule appended to its built-in chain; a chain
// that is not wanted is removed with its jumps. A family that is off is
// cleaned once (again after it was on), not at every resync. When
// everything is in place Ensure only lists and writes nothing.
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
		if err := fw.ensureFamily(f, p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

func (fw *Firewall) ensureFamily(f firewall.Family, p firewall.Policy) error {
	if !p.Wants(f) {
		if fw.offSet[f] {
			return nil
		}
		ipt, err := fw.family(f)
		if errors.Is(err, firewall.ErrNotInstalled) {
			fw.offSet[f] = true // no command, no rules
			return nil
		}
		if err != nil {
			return err
		}
		for _, set := range []chainSet{masqSet, fwdSet} {
			if err := removeSet(ipt, set); err != nil {
				return err
			}
		}
		fw.offSet[f] = true
		return nil
	}
	fw.offSet[f] = false
	ipt, err := fw.family(f)
	if err != nil {
		return err
	}
	n := p.Net(f)
	masq, fwd := Rules(n.Network, n.Subnet)
	for _, x := range []struct {
		set   chainSet
		on    bool
		rules []Rule
	}{{masqSet, p.Masq, masq}, {fwdSet, p.Forward, fwd}} {
		if x.on {
			err = fw.ensureSet(ipt, f, x.set, x.rules)
		} else {
			err = removeSet(ipt, x.set)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the FLANNEL-POSTRTG and FLANNEL-FWD chains and every rule
// that jumps to them, in both families (for a switch to nftables and for
// `weft node teardown`). Missing chains, and a missing ip6tables, are fine.
func (fw *Firewall) Remove(ctx context.Context) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var errs []error
	for _, f := range firewall.Families {
		if err := ctx.Err(); err != nil {
			return err
		}
		ipt, err := fw.family(f)
		if errors.Is(err, firewall.ErrNotInstalled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, set := range []chainSet{masqSet, fwdSet} {
			if err := removeSet(ipt, set); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
			}
		}
		fw.offSet[f] = false
	}
	return errors.Join(errs...)
}

func (fw *Firewall) ensureSet(ipt IPTables, f firewall.Family, set chainSet, want []Rule) error {
	have, exists, err := listChain(ipt, set.table, set.chain)
	if err != nil {
		return err
	}
	if !sameRules(have, want) {
		if exists {
			err = ipt.ClearChain(set.table, set.chain)
		} else {
			err = ipt.NewChain(set.table, set.chain)
		}
		if err != nil {
			return fmt.Errorf("preparing chain %s/%s: %w", set.table, set.chain, err)
		}
		for _, r := range want {
			if err := ipt.Append(r.Table, r.Chain, r.Spec...); err != nil {
				return fmt.Errorf("appending %s: %w", r, err)
			}
		}
		fw.log.Info("iptables chain written", "family", f, "table", set.table, "chain", set.chain, "rules", len(want), "replaced", len(have))
	}
	// The jump comes after the chain is complete, so that nothing reaches
	// a half-written chain the first time.
	jump := jumpRule(set.table, set.parent, set.chain, set.comment)
	jumps, err := findJumps(ipt, set)
	if err != nil {
		return err
	}
	if len(jumps) == 1 && slices.Equal(jumps[0], jump.Spec) {
		return nil
	}
	for _, spec := range jumps {
		if err := ipt.Delete(set.table, set.parent, spec...); err != nil {
			return fmt.Errorf("deleting stray jump %s/%s %q: %w", set.table, set.parent, spec, err)
		}
	}
	if err := ipt.Append(jump.Table, jump.Chain, jump.Spec...); err != nil {
		return fmt.Errorf("appending %s: %w", jump, err)
	}
	fw.log.Info("iptables jump written", "family", f, "rule", jump.String())
	return nil
}

// removeSet deletes every jump to the set's chain, then the chain.
func removeSet(ipt IPTables, set chainSet) error {
	jumps, err := findJumps(ipt, set)
	if err != nil {
		return err
	}
	for _, spec := range jumps {
		if err := ipt.Delete(set.table, set.parent, spec...); err != nil {
			return fmt.Errorf("deleting jump %s/%s %q: %w", set.table, set.parent, spec, err)
		}
	}
	exists, err := ipt.ChainExists(set.table, set.chain)
	if err != nil {
		return fmt.Errorf("checking chain %s/%s: %w", set.table, set.chain, err)
	}
	if !exists {
		return nil
	}
	if err := ipt.ClearChain(set.table, set.chain); err != nil {
		return fmt.Errorf("flushing chain %s/%s: %w", set.table, set.chain, err)
	}
	if err := ipt.DeleteChain(set.table, set.chain); err != nil {
		return fmt.Errorf("deleting chain %s/%s: %w", set.table, set.chain, err)
	}
	return nil
}

// listChain returns the rule specs of a chain; exists is false (and the
// error nil) when the chain is missing.
func listChain(ipt IPTables, table, chain string) (specs [][]string, exists bool, err error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		// iptables-nft and iptables-legacy word a missing chain
		// differently; ask plainly.
		if ok, cerr := ipt.ChainExists(table, chain); cerr == nil && !ok {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("listing chain %s/%s: %w", table, chain, err)
	}
	for _, l := range lines {
		if c, spec, ok := splitRule(l); ok && c == chain {
			specs = append(specs, spec)
		}
	}
	return specs, true, nil
}

// findJumps returns the specs of every rule in the set's built-in chain
// whose target is the set's chain.
func findJumps(ipt IPTables, set chainSet) ([][]string, error) {
	specs, _, err := listChain(ipt, set.table, set.parent)
	if err != nil {
		return nil, err
	}
	var jumps [][]string
	for _, spec := range specs {
		if i := slices.Index(spec, "-j"); i >= 0 && i+1 < len(spec) && spec[i+1] == set.chain {
			jumps = append(jumps, spec)
		}
	}
	return jumps, nil
}

func sameRules(have [][]string, want []Rule) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range want {
		if !want[i].equalSpec(have[i]) {
			return false
		}
	}
	return true
}
