// Package hostgw is the host-gw backend: no tunnel, a plain route to each
// peer's subnet via the peer's PublicIP on the external interface. It needs
// every node on one L2 segment.
//
// # What it programs
//
// For each peer, one main-table route:
//
//	route <peer subnet> via <peer PublicIP> dev <ext>
//
// A peer whose PublicIP is not on a directly connected subnet of the
// external interface cannot be reached this way: it is skipped with an error
// naming it, and the others are programmed. Leases carry BackendType
// "host-gw" and no BackendData (as flanneld writes them); pods use the
// interface's MTU.
//
// # How
//
// As the vxlan backend: Set builds the desired routes and a
// netlinkx.Programmer diffs them against what it applied (or a kernel dump
// when that is not trusted), adding before deleting. The backend owns the
// main-table gateway routes on the external interface to subnets of the
// network (other than its own), and nothing else. Netlink updates that
// undo its work fire Changes, and the next Set repairs them.
package hostgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// TypeName is the backend type as written in the network config and leases.
const TypeName = "host-gw"

// DefaultVerifyEvery is how long Set trusts its memory of the kernel state
// before it reads the kernel again (netlink updates invalidate it sooner).
const DefaultVerifyEvery = 10 * time.Second

// Config holds what the constructor needs beyond backend.Params.
type Config struct {
	// Netlink is the namespace to program; nil opens the current one (and
	// the backend closes it on Close).
	Netlink netlinkx.Interface
	// VerifyEvery overrides DefaultVerifyEvery; negative means always read
	// the kernel.
	VerifyEvery time.Duration
}

// Spec returns the registry entry of the host-gw backend.
func Spec() backend.Spec {
	return backend.Spec{
		New: func(ctx context.Context, p backend.Params) (backend.Backend, error) {
			return New(ctx, p, Config{})
		},
		ValidateData: ValidateData,
		Plan: func(ctx context.Context, p backend.Params, s backend.State) (backend.Plan, error) {
			return Plan(ctx, p, Config{}, s)
		},
	}
}

// ValidateData accepts any BackendData: host-gw leases carry none, and a
// peer needs nothing but its PublicIP.
func ValidateData(*subnet.Config, json.RawMessage) error { return nil }

var _ backend.Backend = (*Backend)(nil)

// Backend is the host-gw backend. Create it with New.
type Backend struct {
	log  *slog.Logger
	nl   netlinkx.Interface
	cfg  *subnet.Config
	ext  backend.ExternalInterface
	prog *netlinkx.Programmer
	sess *netlinkx.Session

	setMu     sync.Mutex
	extPrefix []netip.Prefix
	extKnown  atomic.Bool
	own       atomic.Pointer[netip.Prefix]
}

// New creates the backend and starts watching netlink. It programs nothing;
// call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	if !p.Ext.Addr.Is4() || p.Ext.Index <= 0 {
		return nil, fmt.Errorf("host-gw backend: external interface %q (index %d) needs an IPv4 address, has %v", p.Ext.Name, p.Ext.Index, p.Ext.Addr)
	}
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{
		log: log.With("backend", TypeName, "device", p.Ext.Name),
		cfg: p.Config,
		ext: p.Ext,
	}
	sess, err := netlinkx.NewSession(ctx, c.Netlink, b.log)
	if err != nil {
		return nil, fmt.Errorf("host-gw backend: %w", err)
	}
	b.sess, b.nl = sess, sess.NL
	verify := c.VerifyEvery
	if verify == 0 {
		verify = DefaultVerifyEvery
	}
	b.prog = netlinkx.NewProgrammer(b.nl, b.ownsRoute, verify)
	var none netip.Prefix
	b.own.Store(&none)
	sess.Follow(b.observe, b.Resync)
	return b, nil
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return TypeName }

// MTU implements backend.Backend: the external interface's MTU.
func (b *Backend) MTU() int { return b.ext.MTU }

// LeaseAttrs implements backend.Backend: BackendType "host-gw", no
// BackendData.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	attrs.BackendType = TypeName
	attrs.BackendData = nil
	return nil
}

// Changes implements backend.Backend.
func (b *Backend) Changes() <-chan struct{} { return b.sess.Changes() }

// Resync makes the next Set read the kernel state.
func (b *Backend) Resync() {
	b.extKnown.Store(false)
	b.prog.Invalidate()
}

// Close implements backend.Backend: it stops watching netlink and leaves
// the routes in place.
func (b *Backend) Close() error {
	b.sess.Close()
	return nil
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LinkUpdate && u.Link.Index == b.ext.Index {
		// Addresses or state of the underlay may have changed.
		b.Resync()
		b.sess.Notify()
		return
	}
	if b.prog.Observe(u) {
		b.sess.Notify()
	}
}

// ownsRoute: gateway routes on the external interface to subnets of the
// network other than our own.
func (b *Backend) ownsRoute(r netlinkx.Route, _ int) bool {
	return r.LinkIndex == b.ext.Index && r.Gw.IsValid() && r.Dst.Bits() == b.cfg.SubnetLen &&
		b.cfg.Network.Contains(r.Dst.Addr()) && r.Dst != *b.own.Load()
}

// Set implements backend.Backend.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.setMu.Lock()
	defer b.setMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.Own.Subnet.IsValid() || !b.cfg.Contains(s.Own.Subnet) {
		return fmt.Errorf("host-gw backend: own subnet %v is not a /%d of network %s", s.Own.Subnet, b.cfg.SubnetLen, b.cfg.Network)
	}
	own := s.Own.Subnet
	b.own.Store(&own)
	if !b.extKnown.Load() {
		ps, err := b.nl.Addrs(b.ext.Index)
		if err != nil {
			return fmt.Errorf("host-gw backend: addresses of %s: %w", b.ext.Name, err)
		}
		b.extPrefix = ps
		b.extKnown.Store(true)
	}
	want, peerErrs := b.desired(s)
	st, err := b.prog.Sync(0, want)
	if st.Added+st.Deleted > 0 || err != nil || len(peerErrs) > 0 {
		b.log.Debug("reconciled", "peers", len(s.Peers), "added", st.Added, "deleted", st.Deleted, "dumped", st.Dumped, "skipped", len(peerErrs))
	}
	return errors.Join(append(peerErrs, err)...)
}

func (b *Backend) desired(s backend.State) (netlinkx.Entries, []error) {
	peers := slices.Clone(s.Peers)
	slices.SortFunc(peers, func(x, y subnet.Lease) int {
		if c := x.Subnet.Addr().Compare(y.Subnet.Addr()); c != 0 {
			return c
		}
		return x.Subnet.Bits() - y.Subnet.Bits()
	})
	want := netlinkx.NewEntries(len(peers))
	var errs []error
	for i := range peers {
		p := &peers[i]
		if p.Subnet == s.Own.Subnet {
			continue
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("host-gw backend: skipping peer %s (PublicIP %v): %s", p.Key(), p.Attrs.PublicIP, fmt.Sprintf(format, args...)))
		}
		if !b.cfg.Contains(p.Subnet) {
			fail("subnet %v is not a /%d of network %s", p.Subnet, b.cfg.SubnetLen, b.cfg.Network)
			continue
		}
		if (i > 0 && peers[i-1].Subnet == p.Subnet) || (i+1 < len(peers) && peers[i+1].Subnet == p.Subnet) {
			fail("another peer holds subnet %s", p.Subnet)
			continue
		}
		ip := p.Attrs.PublicIP
		if !ip.Is4() || !subnet.IsUsableUnicast(ip) {
			fail("PublicIP is not a unicast IPv4 address")
			continue
		}
		if p.Attrs.BackendType != TypeName {
			fail("BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			continue
		}
		if !b.onLink(ip) {
			fail("PublicIP is not on a directly connected subnet of %s (%v); host-gw needs every node on one L2 segment", b.ext.Name, b.extPrefix)
			continue
		}
		want.Routes[p.Subnet] = netlinkx.Route{Dst: p.Subnet, Gw: ip, LinkIndex: b.ext.Index}
	}
	return want, errs
}

func (b *Backend) onLink(ip netip.Addr) bool {
	for _, p := range b.extPrefix {
		if p.Contains(ip) && p.Addr() != ip && p.Bits() < 32 {
			return true
		}
	}
	return false
}
