// Package vxlan is the default backend: an overlay of VXLAN tunnels between
// nodes, kernel-compatible with flanneld's so that weft and flanneld nodes
// share one cluster.
//
// # What it programs
//
// One device, flannel.<VNI> (VXLAN, UDP port 8472 by default, nolearning,
// local address and underlay link = the node's external interface, MTU =
// the underlay's minus 50, and a MAC derived from the public IP and the VNI
// so that it survives restarts and reboots). The device carries
// <own subnet>.0/32. For each peer, in this order:
//
//	neighbour <peer subnet>.0 lladdr <peer VtepMAC> permanent   (no ARP)
//	fdb <peer VtepMAC> dst <peer PublicIP> self permanent     (where to tunnel)
//	route <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
//
// The route comes last, so that the kernel never has to resolve its
// gateway by ARP. With DirectRouting, a peer whose PublicIP lies on a
// directly connected subnet of the underlay gets a plain route via its
// PublicIP instead, and no tunnel entries.
//
// # How
//
// Set computes the desired entries from the peer set and hands them to a
// netlinkx.Programmer, which diffs them against what it applied last (or a
// kernel dump when that is not trusted), adds before it deletes, and counts
// what it did. The backend owns every neighbour and FDB entry of its device
// and the main-table routes to subnets of the network on its device (and,
// with DirectRouting, gateway routes on the underlay); it never touches other
// routes. A netlink subscription tells it when someone else changes any of
// that, including deleting the device: it then fires Changes, and the next
// Set verifies the kernel and repairs it. An existing compatible device is
// reused at start, so that a restarted agent does not drop traffic.
package vxlan

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
	"github.com/weftnet/weft/internal/netlinkx"
	"github.com/weftnet/weft/subnet"
)

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

// Spec returns the registry entry of the vxlan backend.
func Spec() backend.Spec {
	return backend.Spec{
		New: func(ctx context.Context, p backend.Params) (backend.Backend, error) {
			return New(ctx, p, Config{})
		},
		ValidateData: ValidateData,
	}
}

var _ backend.Backend = (*Backend)(nil)

// Backend is the vxlan backend. Create it with New.
type Backend struct {
	log     *slog.Logger
	nl      netlinkx.Interface
	closeNL func() error
	cfg     *subnet.Config
	opts    Options
	ext     backend.ExternalInterface
	mac     netlinkx.MAC
	mtu     int
	prog    *netlinkx.Programmer
	changes chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}

	// setMu serialises Set.
	setMu      sync.Mutex
	link       netlinkx.Link
	addrFor    netip.Prefix   // the own subnet whose address the device carries
	extPrefix  []netip.Prefix // connected prefixes of the underlay
	devChecked atomic.Bool    // the device is known to exist as configured
	linkIndex  atomic.Int64
	own        atomic.Pointer[netip.Prefix]
	dataCache  map[netip.Prefix]parsedData   // guarded by setMu
	want       netlinkx.Entries              // scratch for desired, guarded by setMu
	macOwner   map[netlinkx.MAC]netip.Prefix // scratch for desired, guarded by setMu
}

// New creates the backend: it parses the options in p.Config.Backend,
// creates or reuses the VXLAN device and starts watching netlink. It
// programs no peers; call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return nil, err
	}
	if !p.Ext.Addr.Is4() || p.Ext.Index <= 0 {
		return nil, fmt.Errorf("vxlan backend: external interface %q (index %d) needs an IPv4 address, has %v", p.Ext.Name, p.Ext.Index, p.Ext.Addr)
	}
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{
		log:     log.With("backend", TypeName, "device", opts.DeviceName()),
		nl:      c.Netlink,
		cfg:     p.Config,
		opts:    opts,
		ext:     p.Ext,
		changes: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	pub := p.Ext.PublicIP
	if !pub.IsValid() {
		pub = p.Ext.Addr
	}
	b.mac = VtepMAC(pub, opts.VNI)
	b.mtu = opts.MTU
	if b.mtu == 0 {
		b.mtu = p.Ext.MTU - Overhead
	}
	if b.nl == nil {
		h, err := netlinkx.Open()
		if err != nil {
			return nil, err
		}
		b.nl, b.closeNL = h, h.Close
	}
	verify := c.VerifyEvery
	if verify == 0 {
		verify = DefaultVerifyEvery
	}
	b.prog = netlinkx.NewProgrammer(b.nl, b.ownsRoute, verify)
	var none netip.Prefix
	b.own.Store(&none)

	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	updates, err := b.nl.Subscribe(wctx)
	if err != nil {
		cancel()
		b.closeNetlink()
		return nil, fmt.Errorf("vxlan backend: watching netlink: %w", err)
	}
	if err := b.ensureDevice(); err != nil {
		cancel()
		for range updates {
		}
		b.closeNetlink()
		return nil, err
	}
	go b.watch(wctx, updates)
	return b, nil
}

func (b *Backend) closeNetlink() {
	if b.closeNL != nil {
		if err := b.closeNL(); err != nil {
			b.log.Warn("closing netlink handle", "err", err)
		}
	}
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return TypeName }

// MTU implements backend.Backend.
func (b *Backend) MTU() int { return b.mtu }

// VtepMAC returns the device's MAC address, as advertised in the lease.
func (b *Backend) VtepMAC() netlinkx.MAC { return b.mac }

// LeaseAttrs implements backend.Backend: BackendType "vxlan" and
// BackendData {"VNI":…,"VtepMAC":"…"}.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	data, err := json.Marshal(BackendData{VNI: b.opts.VNI, VtepMAC: b.mac.String()})
	if err != nil {
		return fmt.Errorf("encoding vxlan backend data: %w", err)
	}
	attrs.BackendType = TypeName
	attrs.BackendData = data
	return nil
}

// Changes implements backend.Backend.
func (b *Backend) Changes() <-chan struct{} { return b.changes }

// Resync makes the next Set read the kernel state and check the device
// rather than trust what it applied before.
func (b *Backend) Resync() {
	b.devChecked.Store(false)
	b.prog.Invalidate()
}

// Close implements backend.Backend: it stops watching netlink and leaves the
// kernel state in place.
func (b *Backend) Close() error {
	b.cancel()
	<-b.done
	b.closeNetlink()
	return nil
}

func (b *Backend) notify() {
	select {
	case b.changes <- struct{}{}:
	default:
	}
}

// watch follows netlink updates until ctx ends, and subscribes again when
// a subscription ends early (updates were lost: resync).
func (b *Backend) watch(ctx context.Context, updates <-chan netlinkx.Update) {
	defer close(b.done)
	for {
		for u := range updates {
			b.observe(u)
		}
		if ctx.Err() != nil {
			return
		}
		b.Resync()
		b.notify()
		var err error
		for {
			if updates, err = b.nl.Subscribe(ctx); err == nil {
				break
			}
			b.log.Warn("netlink subscription failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LinkUpdate {
		l := u.Link
		ours := l.Name == b.opts.DeviceName() || (l.Index != 0 && int64(l.Index) == b.linkIndex.Load())
		if ours && (u.Deleted || !b.compatible(l) || !l.Up || l.MTU != b.mtu) {
			b.devChecked.Store(false)
			b.prog.Invalidate()
			b.notify()
		}
		return
	}
	if u.Kind == netlinkx.LostUpdates {
		b.log.Warn("netlink updates lost; the next Set reads the kernel state", "err", u.Err)
	}
	if b.prog.Observe(u) {
		b.notify()
	}
}

// compatible reports whether an existing link can serve as our device.
func (b *Backend) compatible(l netlinkx.Link) bool {
	v := l.VXLAN
	return l.Type == "vxlan" && v != nil && v.VNI == b.opts.VNI && v.Port == b.opts.Port &&
		v.Local == b.ext.Addr && v.VtepDevIndex == b.ext.Index && v.GBP == b.opts.GBP &&
		!v.Learning && l.MAC == b.mac
}

// ensureDevice finds or creates the device and brings it to the configured
// MTU and up. Must hold setMu or be in New.
func (b *Backend) ensureDevice() error {
	name := b.opts.DeviceName()
	l, err := b.nl.LinkByName(name)
	switch {
	case errors.Is(err, netlinkx.ErrNotFound):
		l, err = b.create()
	case err != nil:
		return fmt.Errorf("vxlan backend: %w", err)
	case !b.compatible(l):
		b.log.Warn("existing device is incompatible; recreating it", "index", l.Index, "type", l.Type, "mac", l.MAC.String())
		if err := b.nl.DeleteLink(l.Index); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
			return fmt.Errorf("vxlan backend: replacing incompatible %s: %w", name, err)
		}
		l, err = b.create()
	default:
		b.log.Debug("reusing existing device", "index", l.Index)
	}
	if err != nil {
		return err
	}
	if l.MTU != b.mtu {
		if err := b.nl.SetLinkMTU(l.Index, b.mtu); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	if !l.Up {
		if err := b.nl.SetLinkUp(l.Index); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	if l.Index != b.link.Index {
		b.addrFor = netip.Prefix{}
	}
	b.link = l
	b.linkIndex.Store(int64(l.Index))
	prefixes, err := b.nl.Addrs(b.ext.Index)
	if err != nil {
		return fmt.Errorf("vxlan backend: addresses of %s: %w", b.ext.Name, err)
	}
	b.extPrefix = prefixes
	b.devChecked.Store(true)
	return nil
}

func (b *Backend) create() (netlinkx.Link, error) {
	l, err := b.nl.AddVXLAN(netlinkx.NewVXLAN{
		Name: b.opts.DeviceName(),
		MTU:  b.mtu,
		MAC:  b.mac,
		VXLAN: netlinkx.VXLAN{
			VNI: b.opts.VNI, Port: b.opts.Port, Local: b.ext.Addr, VtepDevIndex: b.ext.Index, GBP: b.opts.GBP,
		},
	})
	if err != nil {
		return l, fmt.Errorf("vxlan backend: %w", err)
	}
	b.log.Info("created device", "index", l.Index, "mac", b.mac.String(), "mtu", b.mtu)
	return l, nil
}

// ensureAddr gives the device <own subnet>.0/32 and removes other IPv4
// addresses (from older leases).
func (b *Backend) ensureAddr(own netip.Prefix) error {
	want := netip.PrefixFrom(own.Addr(), 32)
	have, err := b.nl.Addrs(b.link.Index)
	if err != nil {
		return fmt.Errorf("vxlan backend: %w", err)
	}
	if !slices.Contains(have, want) {
		if err := b.nl.AddAddr(b.link.Index, want); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	for _, p := range have {
		if p != want && p.Addr().Is4() {
			if err := b.nl.DeleteAddr(b.link.Index, p); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
				return fmt.Errorf("vxlan backend: removing stale address: %w", err)
			}
		}
	}
	b.addrFor = own
	return nil
}

// ownsRoute reports whether a main-table route is one the backend manages:
// a route to a subnet of the network (not our own) on our device, or with
// DirectRouting a gateway route on the underlay.
func (b *Backend) ownsRoute(r netlinkx.Route, link int) bool {
	if r.Dst.Bits() != b.cfg.SubnetLen || !b.cfg.Network.Contains(r.Dst.Addr()) || r.Dst == *b.own.Load() {
		return false
	}
	if link != 0 && r.LinkIndex == link {
		return true
	}
	return b.opts.DirectRouting && r.LinkIndex == b.ext.Index && r.Gw.IsValid()
}

// Set implements backend.Backend.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.setMu.Lock()
	defer b.setMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.Own.Subnet.IsValid() || !b.cfg.Contains(s.Own.Subnet) {
		return fmt.Errorf("vxlan backend: own subnet %v is not a /%d of network %s", s.Own.Subnet, b.cfg.SubnetLen, b.cfg.Network)
	}
	own := s.Own.Subnet
	b.own.Store(&own)
	if !b.devChecked.Load() {
		if err := b.ensureDevice(); err != nil {
			b.prog.Invalidate()
			return err
		}
	}
	if b.addrFor != own {
		if err := b.ensureAddr(own); err != nil {
			return err
		}
	}
	want, peerErrs := b.desired(s)
	if len(b.dataCache) > 2*len(s.Peers)+16 {
		// Forget the data of peers that left.
		b.dataCache = nil
	}
	st, err := b.prog.Sync(b.link.Index, want)
	if st.Added+st.Deleted > 0 || err != nil || len(peerErrs) > 0 {
		b.log.Debug("reconciled", "peers", len(s.Peers), "added", st.Added, "deleted", st.Deleted, "dumped", st.Dumped, "skipped", len(peerErrs))
	}
	return errors.Join(append(peerErrs, err)...)
}

// desired computes the entries for a peer set. Peers are taken in subnet
// order, so that conflicts (two peers claiming one VtepMAC) resolve the same
// way whatever the order of s.Peers.
func (b *Backend) desired(s backend.State) (netlinkx.Entries, []error) {
	peers := slices.Clone(s.Peers)
	slices.SortFunc(peers, func(x, y subnet.Lease) int { return comparePrefix(x.Subnet, y.Subnet) })
	// The maps are reused from Set to Set (Sync does not keep them): with
	// thousands of peers, allocating them anew would dominate a Set that
	// applies one change.
	if b.want.Neighs == nil {
		b.want = netlinkx.NewEntries(len(peers))
		b.macOwner = make(map[netlinkx.MAC]netip.Prefix, len(peers))
	}
	want, macOwner := b.want, b.macOwner
	clear(want.Neighs)
	clear(want.FDBs)
	clear(want.Routes)
	clear(macOwner)
	idx := b.link.Index
	var errs []error
	for i := range peers {
		p := &peers[i]
		if p.Subnet == s.Own.Subnet {
			continue
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("vxlan backend: skipping peer %s (PublicIP %v): %s", p.Key(), p.Attrs.PublicIP, fmt.Sprintf(format, args...)))
		}
		if !b.cfg.Contains(p.Subnet) {
			fail("subnet %v is not a /%d of network %s", p.Subnet, b.cfg.SubnetLen, b.cfg.Network)
			continue
		}
		if (i > 0 && peers[i-1].Subnet == p.Subnet) || (i+1 < len(peers) && peers[i+1].Subnet == p.Subnet) {
			// Neither holder can be trusted; skipping both keeps the
			// result independent of the peers' order.
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
		mac, err := b.parseData(p)
		if err != nil {
			fail("%v", err)
			continue
		}
		if b.opts.DirectRouting && b.onLink(ip) {
			want.Routes[p.Subnet] = netlinkx.Route{Dst: p.Subnet, Gw: ip, LinkIndex: b.ext.Index}
			continue
		}
		if other, dup := macOwner[mac]; dup {
			fail("VtepMAC %s is already used by peer %s", mac, other)
			continue
		}
		macOwner[mac] = p.Subnet
		gw := p.Subnet.Addr()
		want.Neighs[gw] = netlinkx.Neigh{LinkIndex: idx, IP: gw, MAC: mac, Permanent: true}
		want.FDBs[netlinkx.FDB{LinkIndex: idx, MAC: mac, Dst: ip}] = struct{}{}
		want.Routes[p.Subnet] = netlinkx.Route{Dst: p.Subnet, Gw: gw, LinkIndex: idx, OnLink: true}
	}
	return want, errs
}

// parsedData is a peer's BackendData as last parsed.
type parsedData struct {
	raw string
	mac netlinkx.MAC
	err error
}

// parseData parses a peer's BackendData, reusing the result of the last
// Set when the data has not changed: a Set after one peer change then costs
// no JSON decoding for the thousands of others.
func (b *Backend) parseData(p *subnet.Lease) (netlinkx.MAC, error) {
	if c, ok := b.dataCache[p.Subnet]; ok && c.raw == string(p.Attrs.BackendData) {
		return c.mac, c.err
	}
	mac, err := ParseBackendData(p.Attrs.BackendData, b.opts.VNI)
	if b.dataCache == nil {
		b.dataCache = map[netip.Prefix]parsedData{}
	}
	b.dataCache[p.Subnet] = parsedData{raw: string(p.Attrs.BackendData), mac: mac, err: err}
	return mac, err
}

// onLink reports whether ip is on a directly connected subnet of the
// underlay (and is not the underlay's own address).
func (b *Backend) onLink(ip netip.Addr) bool {
	for _, p := range b.extPrefix {
		if p.Contains(ip) && p.Addr() != ip && p.Bits() < 32 {
			return true
		}
	}
	return false
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}
