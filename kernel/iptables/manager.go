package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
)

// IPTables is the part of go-iptables' *iptables.IPTables that the Manager
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

// New returns go-iptables for IPv4 (or IPv6 when v6 is set), running
// iptables (ip6tables) with -w so that concurrent callers such as
// kube-proxy wait for each other instead of failing.
func New(v6 bool) (*goipt.IPTables, error) {
	proto := goipt.ProtocolIPv4
	if v6 {
		proto = goipt.ProtocolIPv6
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Timeout(int(LockWait/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("finding iptables (IPv6 %t): %w", v6, err)
	}
	return ipt, nil
}

// Config is the rule set a Manager keeps.
type Config struct {
	// Network is the cluster network (FLANNEL_NETWORK).
	Network netip.Prefix
	// Subnet is this node's subnet (FLANNEL_SUBNET; the address part is
	// masked).
	Subnet netip.Prefix
	// Masq installs the FLANNEL-POSTRTG chain (flanneld's -ip-masq).
	Masq bool
	// Forward installs the FLANNEL-FWD chain (-iptables-forward-rules).
	Forward bool
}

// Validate checks that the network and subnet are valid, of one family, and
// that the subnet lies inside the network.
func (c Config) Validate() error {
	if !c.Masq && !c.Forward {
		return nil
	}
	if !c.Network.IsValid() {
		return fmt.Errorf("iptables config: network %v is not a valid prefix", c.Network)
	}
	if !c.Subnet.IsValid() {
		return fmt.Errorf("iptables config: subnet %v is not a valid prefix", c.Subnet)
	}
	if c.Network.Addr().Is4() != c.Subnet.Addr().Is4() {
		return fmt.Errorf("iptables config: network %s and subnet %s are of different families", c.Network, c.Subnet)
	}
	if c.Subnet.Bits() < c.Network.Bits() || !c.Network.Contains(c.Subnet.Addr()) {
		return fmt.Errorf("iptables config: subnet %s is not inside network %s", c.Subnet, c.Network)
	}
	return nil
}

// chainSet is one of our chains with the jump rule that reaches it.
type chainSet struct {
	table, parent, chain, comment string
}

var (
	masqSet = chainSet{TableNAT, ChainPost, ChainMasq, CommentMasq}
	fwdSet  = chainSet{TableFilter, ChainForward, ChainFwd, CommentFwd}
)

// Manager keeps flanneld's rules in one address family of the kernel's
// iptables. It is safe for concurrent use.
type Manager struct {
	ipt  IPTables
	log  *slog.Logger
	kick chan struct{}

	mu  sync.Mutex // guards cfg and serializes Ensure and Teardown
	cfg Config
}

// NewManager returns a Manager that keeps the rules of cfg through ipt.
// A nil logger discards.
func NewManager(ipt IPTables, cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{ipt: ipt, log: log, cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// SetConfig replaces the wanted rule set (for instance after the lease or
// the network changed). The next Ensure applies it; a running Run applies
// it at once.
func (m *Manager) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return nil
}

// Ensure makes the kernel hold exactly the wanted rules: each enabled chain
// exists with exactly the wanted rules in order (rewritten whole when its
// content differs, which also removes an old network's rules), and is
// reached by exactly one jump rule appended to its built-in chain; a
// disabled chain and its jumps are removed. When everything is in place it
// only lists and writes nothing.
func (m *Manager) Ensure(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := m.cfg
	var masq, fwd []Rule
	if cfg.Masq || cfg.Forward {
		masq, fwd = Rules(cfg.Network, cfg.Subnet)
	}
	for _, x := range []struct {
		set   chainSet
		on    bool
		rules []Rule
	}{{masqSet, cfg.Masq, masq}, {fwdSet, cfg.Forward, fwd}} {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		if x.on {
			err = m.ensureSet(x.set, x.rules)
		} else {
			err = removeSet(m.ipt, x.set)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Run calls Ensure now, after every SetConfig and every resync period,
// until ctx is done; then it returns ctx's error. Errors are logged (once
// per distinct error, so a broken iptables does not flood the log) and
// retried at the next period.
func (m *Manager) Run(ctx context.Context, resync time.Duration) error {
	t := time.NewTicker(resync)
	defer t.Stop()
	var lastErr string
	for {
		if err := m.Ensure(ctx); err != nil && ctx.Err() == nil {
			if err.Error() != lastErr {
				m.log.Error("ensuring iptables rules", "err", err)
				lastErr = err.Error()
			}
		} else if err == nil && lastErr != "" {
			m.log.Info("iptables rules restored")
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-m.kick:
		}
	}
}

// Teardown removes both chains and their jump rules, whatever the Manager's
// config.
func (m *Manager) Teardown(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Teardown(ctx, m.ipt)
}

// Teardown removes the FLANNEL-POSTRTG and FLANNEL-FWD chains and every rule
// that jumps to them (for `weft node teardown`). Missing chains are fine.
func Teardown(ctx context.Context, ipt IPTables) error {
	var errs []error
	for _, set := range []chainSet{masqSet, fwdSet} {
		if err := ctx.Err(); err != nil {
			return err
		}
		errs = append(errs, removeSet(ipt, set))
	}
	return errors.Join(errs...)
}

func (m *Manager) ensureSet(set chainSet, want []Rule) error {
	have, exists, err := listChain(m.ipt, set.table, set.chain)
	if err != nil {
		return err
	}
	if !sameRules(have, want) {
		if exists {
			err = m.ipt.ClearChain(set.table, set.chain)
		} else {
			err = m.ipt.NewChain(set.table, set.chain)
		}
		if err != nil {
			return fmt.Errorf("preparing chain %s/%s: %w", set.table, set.chain, err)
		}
		for _, r := range want {
			if err := m.ipt.Append(r.Table, r.Chain, r.Spec...); err != nil {
				return fmt.Errorf("appending %s: %w", r, err)
			}
		}
		m.log.Info("iptables chain written", "table", set.table, "chain", set.chain, "rules", len(want), "replaced", len(have))
	}
	// The jump comes after the chain is complete, so that nothing reaches
	// a half-written chain the first time.
	jump := jumpRule(set.table, set.parent, set.chain, set.comment)
	jumps, err := findJumps(m.ipt, set)
	if err != nil {
		return err
	}
	if len(jumps) == 1 && slices.Equal(jumps[0], jump.Spec) {
		return nil
	}
	for _, spec := range jumps {
		if err := m.ipt.Delete(set.table, set.parent, spec...); err != nil {
			return fmt.Errorf("deleting stray jump %s/%s %q: %w", set.table, set.parent, spec, err)
		}
	}
	if err := m.ipt.Append(jump.Table, jump.Chain, jump.Spec...); err != nil {
		return fmt.Errorf("appending %s: %w", jump, err)
	}
	m.log.Info("iptables jump written", "rule", jump.String())
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

// NetworkEnsurer adapts a Manager to callers that pass the network and the
// node's subnet with every call (the agent's Firewall interface).
type NetworkEnsurer struct{ M *Manager }

// Ensure replaces the Manager's network and subnet, keeping its Masq and
// Forward switches, and ensures the rules.
func (n NetworkEnsurer) Ensure(ctx context.Context, network, own netip.Prefix) error {
	n.M.mu.Lock()
	cfg := n.M.cfg
	n.M.mu.Unlock()
	cfg.Network, cfg.Subnet = network, own
	if err := n.M.SetConfig(cfg); err != nil {
		return err
	}
	return n.M.Ensure(ctx)
}
