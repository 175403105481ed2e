// Package firewalltest is a fake of the firewall seam for unit tests of the
// code that drives it (the agent, the keeper loop): it records what it was
// asked and holds the "installed" policy the way the kernel would.
package firewalltest

import (
	"context"
	"sync"

	"github.com/weftnet/weft/firewall"
)

// Fake is an in-memory firewall.Firewall. The zero value is ready.
type Fake struct {
	mu        sync.Mutex
	installed *firewall.Policy
	ensures   int
	writes    int
	removes   int
	err       error
}

var _ firewall.Firewall = (*Fake)(nil)

// Ensure installs p, counting a write only when it differs from what is
// installed (as the real implementations write only what differs). It
// fails, installing nothing, while an error is set with SetError.
func (f *Fake) Ensure(_ context.Context, p firewall.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensures++
	if f.err != nil {
		return f.err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if f.installed == nil || *f.installed != p {
		f.writes++
		f.installed = &p
	}
	return nil
}

// Remove uninstalls everything.
func (f *Fake) Remove(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes++
	if f.err != nil {
		return f.err
	}
	f.installed = nil
	return nil
}

// SetError makes every later call fail with err (nil: succeed again).
func (f *Fake) SetError(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// Tamper forgets what is installed, as if someone flushed the rules by
// hand; the next Ensure writes again.
func (f *Fake) Tamper() {
	f.mu.Lock()
	f.installed = nil
	f.mu.Unlock()
}

// Installed returns the installed policy, if any.
func (f *Fake) Installed() (firewall.Policy, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.installed == nil {
		return firewall.Policy{}, false
	}
	return *f.installed, true
}

// Counts returns how often Ensure was called, how many of those wrote,
// and how often Remove was called.
func (f *Fake) Counts() (ensures, writes, removes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensures, f.writes, f.removes
}
