// Package base is what the netlink backends (vxlan, host-gw, and wireguard
// around its engine) share: the start-up preamble (underlay check, logger,
// netlink session, programmer),
// the guard at the top of every Set, this node's subnet as the
// route-ownership tests read it from netlink goroutines, the report at the
// end of a Set, and the on-link test for a peer's PublicIP. A backend embeds
// *Base, which gives it Type, Changes and Close.
package base

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// Options holds what a backend's constructor takes beyond backend.Params
// (vxlan.Config and hostgw.Config are this type).
type Options struct {
	// Netlink is the namespace to program; nil opens the current one (and
	// the backend closes it on Close).
	Netlink netlinkx.Interface
	// VerifyEvery overrides the backend's DefaultVerifyEvery: how long Set
	// trusts its memory of the kernel state; negative means always read
	// the kernel.
	VerifyEvery time.Duration
}

// Kind says what differs between the backends.
type Kind struct {
	// Name is the backend type ("vxlan"), in logs and errors.
	Name string
	// Device is the link the backend programs, logged with every line.
	Device string
	// DefaultVerify is the backend's DefaultVerifyEvery.
	DefaultVerify time.Duration
	// Owns tells the programmer which routes are the backend's (see
	// netlinkx.NewProgrammer); nil makes no programmer (a backend that
	// keeps one per device, from Verify).
	Owns func(r netlinkx.Route, link int) bool
}

// Spec returns the registry entry of a backend that newB creates with
// default Options.
func Spec[B backend.Backend](newB func(context.Context, backend.Params, Options) (B, error), validate func(*subnet.Config, json.RawMessage) error) backend.Spec {
	return backend.Spec{
		New: func(ctx context.Context, p backend.Params) (backend.Backend, error) {
			b, err := newB(ctx, p, Options{})
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		ValidateData: validate,
	}
}

// Base holds the shared state of a netlink backend.
type Base struct {
	Name string
	Log  *slog.Logger
	Cfg  *subnet.Config
	Ext  backend.ExternalInterface
	NL   netlinkx.Interface
	Sess *netlinkx.Session
	Prog *netlinkx.Programmer
	// Verify is how long a programmer trusts its memory (Options or the
	// backend's default).
	Verify time.Duration
	// SetMu serialises Set; hold it around Begin and the rest of Set.
	SetMu sync.Mutex
	// own and own6 are this node's subnets of each family (zero when off).
	own, own6 atomic.Pointer[netip.Prefix]
}

// New checks the underlay (an address of each family the network config
// has on), opens the netlink session and the programmer. It does not follow
// netlink yet (see Follow).
func New(ctx context.Context, p backend.Params, o Options, c Kind) (*Base, error) {
	if p.Ext.Index <= 0 || (p.Config.EnableIPv4 && !p.Ext.Addr.Is4()) {
		return nil, fmt.Errorf("%s backend: external interface %q (index %d) needs an IPv4 address, has %v", c.Name, p.Ext.Name, p.Ext.Index, p.Ext.Addr)
	}
	if p.Config.EnableIPv6 && !subnet.IsUsableUnicast6(p.Ext.Addr6) {
		return nil, fmt.Errorf("%s backend: external interface %q (index %d) needs a global IPv6 address, has %v", c.Name, p.Ext.Name, p.Ext.Index, p.Ext.Addr6)
	}
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Base{Name: c.Name, Log: log.With("backend", c.Name, "device", c.Device), Cfg: p.Config, Ext: p.Ext}
	sess, err := netlinkx.NewSession(ctx, o.Netlink, b.Log)
	if err != nil {
		return nil, fmt.Errorf("%s backend: %w", c.Name, err)
	}
	b.Sess, b.NL = sess, sess.NL
	verify := o.VerifyEvery
	if verify == 0 {
		verify = c.DefaultVerify
	}
	b.Verify = verify
	if c.Owns != nil {
		b.Prog = netlinkx.NewProgrammer(b.NL, c.Owns, verify)
	}
	var none, none6 netip.Prefix
	b.own.Store(&none)
	b.own6.Store(&none6)
	return b, nil
}

// Follow starts following netlink: observe gets every update, resync runs
// when updates were lost (then Changes fires).
func (b *Base) Follow(observe func(netlinkx.Update), resync func()) { b.Sess.Follow(observe, resync) }

// Type implements backend.Backend.
func (b *Base) Type() string { return b.Name }

// Changes implements backend.Backend.
func (b *Base) Changes() <-chan struct{} { return b.Sess.Changes() }

// Close implements backend.Backend: it stops following netlink and leaves
// the kernel state in place.
func (b *Base) Close() error {
	b.Sess.Close()
	return nil
}

// Begin is the guard at the top of Set, called with SetMu held: it fails
// when ctx has ended or when the own subnet of a family that is on is not a
// subnet of that family's network, and records the own subnets for
// PeerSubnet.
func (b *Base) Begin(ctx context.Context, s backend.State) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.Cfg.EnableIPv4 && !b.Cfg.Contains(s.Own.Subnet) {
		return fmt.Errorf("%s backend: own subnet %v is not a /%d of network %s", b.Name, s.Own.Subnet, b.Cfg.SubnetLen, b.Cfg.Network)
	}
	if b.Cfg.EnableIPv6 && !b.Cfg.ContainsIPv6(s.Own.IPv6Subnet) {
		return fmt.Errorf("%s backend: own IPv6 subnet %v is not a /%d of network %s", b.Name, s.Own.IPv6Subnet, b.Cfg.IPv6SubnetLen, b.Cfg.IPv6Network)
	}
	own, own6 := s.Own.Subnet, s.Own.IPv6Subnet
	b.own.Store(&own)
	b.own6.Store(&own6)
	return nil
}

// PeerSubnet reports whether dst is a subnet of a network of a family that
// is on (of the configured length) other than this node's: the routes a
// backend may own. It is safe from any goroutine.
func (b *Base) PeerSubnet(dst netip.Prefix) bool {
	if !b.NetworkSubnet(dst) {
		return false
	}
	if dst.Addr().Is4() {
		return dst != *b.own.Load()
	}
	return dst != *b.own6.Load()
}

// NetworkSubnet reports whether dst is a subnet of a network of a family
// that is on (of the configured length), this node's own included: a
// backend owns a route to its own subnet through its own device, which is
// stale (left from when that subnet was a peer's). It is safe from any
// goroutine.
func (b *Base) NetworkSubnet(dst netip.Prefix) bool {
	if dst.Addr().Is4() {
		return b.Cfg.EnableIPv4 && dst.Bits() == b.Cfg.SubnetLen && b.Cfg.Network.Contains(dst.Addr())
	}
	return b.Cfg.EnableIPv6 && dst.Bits() == b.Cfg.IPv6SubnetLen && b.Cfg.IPv6Network.Contains(dst.Addr())
}

// Skip returns the error that says why peer p is left out.
func (b *Base) Skip(p *subnet.Lease, format string, args ...any) error {
	return SkipError(b.Name, p.Key(), p.Attrs.PublicIP, format, args...)
}

// SkipError is Skip for a peer known by its key and PublicIP.
func SkipError(name, key string, publicIP netip.Addr, format string, args ...any) error {
	return fmt.Errorf("%s backend: skipping peer %s (PublicIP %v): %s", name, key, publicIP, fmt.Sprintf(format, args...))
}

// Done ends a Set: it logs what the programmer did when anything happened
// and returns the skipped peers' errors with the programmer's.
func (b *Base) Done(peers int, st netlinkx.Stats, err error, peerErrs []error) error {
	if st.Added+st.Deleted > 0 || err != nil || len(peerErrs) > 0 {
		b.Log.Debug("reconciled", "peers", peers, "added", st.Added, "deleted", st.Deleted, "dumped", st.Dumped, "skipped", len(peerErrs))
	}
	return errors.Join(append(peerErrs, err)...)
}

// OnLink reports whether ip is on one of the directly connected prefixes
// (and is not the address itself): a peer the underlay reaches without a
// router. IPv6 link-local prefixes do not count (a peer's public address is
// never link-local).
func OnLink(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) && p.Addr() != ip && p.Bits() < p.Addr().BitLen() && !p.Addr().IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

// ForPlan returns a Base for a dry run (a backend's Plan): it has no
// session or programmer, so it follows nothing and writes nothing, and it
// has begun s as Set begins it (the own subnets recorded and checked). nl
// is the netlink seam to read, or nil for the current namespace; done
// releases what ForPlan opened.
func ForPlan(ctx context.Context, name string, p backend.Params, nl netlinkx.Interface, s backend.State) (b *Base, done func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	done = func() {}
	if nl == nil {
		h, err := netlinkx.Open()
		if err != nil {
			return nil, nil, fmt.Errorf("%s backend: %w", name, err)
		}
		nl, done = h, func() { h.Close() }
	}
	b = &Base{Name: name, Log: slog.New(slog.DiscardHandler), Cfg: p.Config, Ext: p.Ext, NL: nl}
	if err := b.Begin(ctx, s); err != nil {
		done()
		return nil, nil, err
	}
	return b, done, nil
}
