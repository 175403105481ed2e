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
// With EnableIPv6, each peer's IPv6 subnet gets the same route via its
// PublicIPv6 (a peer without an IPv6 subnet, still IPv4-only while the
// network turns IPv6 on, gets its IPv4 route only).
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
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// TypeName is the backend type as written in the network config and leases.
const TypeName = "host-gw"

// DefaultVerifyEvery is how long Set trusts its memory of the kernel state
// before it reads the kernel again (netlink updates invalidate it sooner).
const DefaultVerifyEvery = 10 * time.Second

// Config holds what the constructor needs beyond backend.Params.
type Config = base.Options

// Spec returns the registry entry of the host-gw backend.
func Spec() backend.Spec {
	s := base.Spec(New, ValidateData)
	s.Plan = func(ctx context.Context, p backend.Params, st backend.State) (backend.Plan, error) {
		return Plan(ctx, p, Config{}, st)
	}
	return s
}

// ValidateData accepts any BackendData: host-gw leases carry none, and a
// peer needs nothing but its PublicIP.
func ValidateData(*subnet.Config, json.RawMessage) error { return nil }

var _ backend.Backend = (*Backend)(nil)

// Backend is the host-gw backend. Create it with New.
type Backend struct {
	*base.Base

	// Guarded by SetMu.
	extPrefix []netip.Prefix
	extKnown  atomic.Bool
}

// New creates the backend and starts watching netlink. It programs nothing;
// call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	b := &Backend{}
	bb, err := base.New(ctx, p, c, base.Kind{
		Name: TypeName, Device: p.Ext.Name, DefaultVerify: DefaultVerifyEvery, Owns: b.ownsRoute,
	})
	if err != nil {
		return nil, err
	}
	b.Base = bb
	b.Follow(b.observe, b.Resync)
	return b, nil
}

// MTU implements backend.Backend: the external interface's MTU.
func (b *Backend) MTU() int { return b.Ext.MTU }

// LeaseAttrs implements backend.Backend: BackendType "host-gw", no
// BackendData.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	attrs.BackendType = TypeName
	attrs.BackendData = nil
	return nil
}

// Resync makes the next Set read the kernel state.
func (b *Backend) Resync() {
	b.extKnown.Store(false)
	b.Prog.Invalidate()
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LinkUpdate && u.Link.Index == b.Ext.Index {
		// Addresses or state of the underlay may have changed.
		b.Resync()
		b.Sess.Notify()
		return
	}
	if b.Prog.Observe(u) {
		b.Sess.Notify()
	}
}

// ownsRoute: gateway routes on the external interface to subnets of the
// network other than our own.
func (b *Backend) ownsRoute(r netlinkx.Route, _ int) bool {
	return r.LinkIndex == b.Ext.Index && r.Gw.IsValid() && b.PeerSubnet(r.Dst)
}

// Set implements backend.Backend.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	if err := b.Begin(ctx, s); err != nil {
		return err
	}
	if !b.extKnown.Load() {
		ps, err := b.NL.Addrs(b.Ext.Index)
		if err != nil {
			return fmt.Errorf("host-gw backend: addresses of %s: %w", b.Ext.Name, err)
		}
		b.extPrefix = ps
		b.extKnown.Store(true)
	}
	want, peerErrs := b.desired(s)
	st, err := b.Prog.Sync(0, want)
	return b.Done(len(s.Peers), st, err, peerErrs)
}

func (b *Backend) desired(s backend.State) (netlinkx.Entries, []error) {
	want := netlinkx.NewEntries(len(s.Peers))
	var errs []error
	if b.Cfg.EnableIPv4 {
		errs = b.family(s, false, want, errs)
	}
	if b.Cfg.EnableIPv6 {
		errs = b.family(s, true, want, errs)
	}
	return want, errs
}

// family adds the routes of one family (IPv6 with six) to want.
func (b *Backend) family(s backend.State, six bool, want netlinkx.Entries, errs []error) []error {
	sub := func(l *subnet.Lease) netip.Prefix {
		if six {
			return l.IPv6Subnet
		}
		return l.Subnet
	}
	peers := slices.Clone(s.Peers)
	slices.SortFunc(peers, func(x, y subnet.Lease) int {
		a, c := sub(&x), sub(&y)
		if r := a.Addr().Compare(c.Addr()); r != 0 {
			return r
		}
		return a.Bits() - c.Bits()
	})
	own := sub(&s.Own)
	for i := range peers {
		p := &peers[i]
		sn := sub(p)
		if sn == own || !sn.IsValid() {
			continue
		}
		ip, what, fam := p.Attrs.PublicIP, "PublicIP", "IPv4"
		contains, usable := b.Cfg.Contains(sn), ip.Is4() && subnet.IsUsableUnicast(ip)
		network, subnetLen := b.Cfg.Network, b.Cfg.SubnetLen
		if six {
			ip, what, fam = p.Attrs.IPv6(), "PublicIPv6", "IPv6"
			contains, usable = b.Cfg.ContainsIPv6(sn), subnet.IsUsableUnicast6(ip)
			network, subnetLen = b.Cfg.IPv6Network, b.Cfg.IPv6SubnetLen
		}
		fail := func(format string, args ...any) {
			if six {
				errs = append(errs, fmt.Errorf("%s backend: skipping peer %s (PublicIPv6 %v): %s", TypeName, p.Key(), ip, fmt.Sprintf(format, args...)))
				return
			}
			errs = append(errs, b.Skip(p, format, args...))
		}
		if !contains {
			fail("subnet %v is not a /%d of network %s", sn, subnetLen, network)
			continue
		}
		if (i > 0 && sub(&peers[i-1]) == sn) || (i+1 < len(peers) && sub(&peers[i+1]) == sn) {
			fail("another peer holds subnet %s", sn)
			continue
		}
		if !usable {
			fail("%s is not a unicast %s address", what, fam)
			continue
		}
		if p.Attrs.BackendType != TypeName {
			fail("BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			continue
		}
		if !base.OnLink(b.extPrefix, ip) {
			fail("%s is not on a directly connected subnet of %s (%v); host-gw needs every node on one L2 segment", what, b.Ext.Name, b.extPrefix)
			continue
		}
		want.Routes[sn] = netlinkx.Route{Dst: sn, Gw: ip, LinkIndex: b.Ext.Index}
	}
	return errs
}
