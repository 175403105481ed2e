package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

var _ Engine = (*Fake)(nil)

// Fake is an in-memory Engine for tests of the backend's logic. It follows
// the engines' contract (allowed IPs are unique per device: setting a peer
// takes its allowed IPs away from any other peer, as WireGuard does) and
// records every Apply, so that tests can check what was added before what
// was removed. The contract test runs it beside the userspace engine.
type Fake struct {
	mu    sync.Mutex
	kind  Kind
	peers map[Key]Peer
	// Ops lists the operations in order: "set <key>", "remove <key>".
	Ops []string
	// FailSet makes Apply fail for these public keys (the others apply).
	FailSet map[Key]error
	// Closed is set by Close.
	Closed bool
}

// NewFake returns an empty fake engine of the given kind.
func NewFake(kind Kind) *Fake {
	return &Fake{kind: kind, peers: map[Key]Peer{}}
}

// Kind implements Engine.
func (f *Fake) Kind() Kind { return f.kind }

// Peers implements Engine.
func (f *Fake) Peers() ([]Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Peer, 0, len(f.peers))
	for _, p := range f.peers {
		p.AllowedIPs = sortedPrefixes(p.AllowedIPs)
		out = append(out, p)
	}
	SortPeers(out)
	return out, nil
}

// Apply implements Engine.
func (f *Fake) Apply(set []Peer, remove []Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, p := range set {
		if err := f.FailSet[p.PublicKey]; err != nil {
			errs = append(errs, fmt.Errorf("fake: setting %s: %w", p, err))
			continue
		}
		f.Ops = append(f.Ops, "set "+p.String())
		for k, o := range f.peers {
			if k == p.PublicKey {
				continue
			}
			o.AllowedIPs = slices.DeleteFunc(slices.Clone(o.AllowedIPs), func(a netip.Prefix) bool { return slices.Contains(p.AllowedIPs, a) })
			f.peers[k] = o
		}
		p.AllowedIPs = sortedPrefixes(p.AllowedIPs)
		p.LastHandshake = f.peers[p.PublicKey].LastHandshake
		f.peers[p.PublicKey] = p
	}
	for _, k := range remove {
		f.Ops = append(f.Ops, "remove "+k.String())
		delete(f.peers, k)
	}
	return errors.Join(errs...)
}

// Roam does what an engine does when an authenticated packet from the
// peer with key arrives from a new address: the peer's endpoint becomes
// that address, and at is its last handshake. It reports false when there
// is no such peer.
func (f *Fake) Roam(key Key, endpoint netip.AddrPort, at time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.peers[key]
	if ok {
		p.Endpoint, p.LastHandshake = endpoint, at
		f.peers[key] = p
	}
	return ok
}

// Close implements Engine.
func (f *Fake) Close() error {
	f.mu.Lock()
	f.Closed = true
	f.mu.Unlock()
	return nil
}

// Dump returns the peers as sorted text, one line each.
func (f *Fake) Dump() string {
	ps, _ := f.Peers()
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TakeOps returns the recorded operations and forgets them.
func (f *Fake) TakeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.Ops
	f.Ops = nil
	return ops
}
