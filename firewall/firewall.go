package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Firewall keeps Weft's rules in one mode of the kernel's packet filter.
// Implementations are safe for concurrent use and touch only what is
// Weft's (its own chains and the jumps to them, or its own tables).
type Firewall interface {
	// Ensure makes the kernel hold exactly the rules of p: it reads what is
	// there, compares it with what p wants, and rewrites only what differs
	// (rules deleted or changed by hand are restored; a family or rule set
	// that p does not want is removed). When everything is in place it
	// writes nothing.
	Ensure(ctx context.Context, p Policy) error
	// Remove deletes every rule, chain and table of this mode that Weft
	// owns, in both families, whatever the policy was. Nothing to remove
	// is not an error.
	Remove(ctx context.Context) error
}

// Keeper is the one loop that keeps a Firewall's rules: it applies the
// policy at once, after every Set, and every resync period, and restores
// whatever was changed by hand in between. It can retire another mode's
// firewall: once the kept rules are in place, the retired mode's rules are
// removed (a node switching between iptables and nftables adds the new rules
// before it deletes the old).
type Keeper struct {
	fw     Firewall
	period time.Duration
	log    *slog.Logger
	kick   chan struct{}

	mu      sync.Mutex // guards policy, set and retire
	policy  Policy
	set     bool
	retire  Firewall
	lastErr string

	firstPass func(error) // nil once called
}

// KeeperOptions configure a Keeper.
type KeeperOptions struct {
	// Period is the resync period (flanneld's -iptables-resync); default 5s.
	Period time.Duration
	// Retire, if not nil, is the other mode's firewall, removed once the
	// kept rules are in place.
	Retire Firewall
	// Log receives what the loop did; nil discards.
	Log *slog.Logger
	// FirstPass, if not nil, is called once, when Run's first pass has
	// ended, with its error (nil: the rules are in place).
	FirstPass func(error)
}

// NewKeeper returns a Keeper of fw. Nothing happens before the first Set.
func NewKeeper(fw Firewall, o KeeperOptions) *Keeper {
	if o.Period <= 0 {
		o.Period = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{fw: fw, period: o.Period, log: o.Log, retire: o.Retire, kick: make(chan struct{}, 1), firstPass: o.FirstPass}
}

// Set replaces the wanted policy (for instance after the node's lease
// changed). A running Run applies it at once; an invalid policy is refused
// and the previous one stays.
func (k *Keeper) Set(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	k.policy, k.set = p, true
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default:
	}
	return nil
}

// Ensure applies the current policy once, then retires the other mode if
// one is waiting. Before the first Set it does nothing.
func (k *Keeper) Ensure(ctx context.Context) error {
	k.mu.Lock()
	p, set, retire := k.policy, k.set, k.retire
	k.mu.Unlock()
	if !set {
		return nil
	}
	if err := k.fw.Ensure(ctx, p); err != nil {
		return err
	}
	if retire == nil {
		return nil
	}
	if err := retire.Remove(ctx); err != nil {
		return fmt.Errorf("removing the other mode's rules: %w", err)
	}
	k.mu.Lock()
	k.retire = nil
	k.mu.Unlock()
	k.log.Info("the other firewall mode's rules are removed")
	return nil
}

// Run calls Ensure now, after every Set and every period until ctx ends,
// then returns ctx's error. A failure is logged once per distinct error (a
// broken iptables does not flood the log) and retried at the next period;
// recovery is logged once.
func (k *Keeper) Run(ctx context.Context) error {
	t := time.NewTicker(k.period)
	defer t.Stop()
	for {
		err := k.pass(ctx)
		if k.firstPass != nil {
			k.firstPass(err)
			k.firstPass = nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-k.kick:
		}
	}
}

// pass runs Ensure, logs the outcome when it changed, and returns Ensure's
// error.
func (k *Keeper) pass(ctx context.Context) error {
	err := k.Ensure(ctx)
	if ctx.Err() != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err != nil && err.Error() != k.lastErr:
		k.log.Error("keeping the firewall rules", "err", err)
		k.lastErr = err.Error()
	case err == nil && k.lastErr != "":
		k.log.Info("firewall rules in place again")
		k.lastErr = ""
	}
	return err
}
