// Package vxlan is the default backend: an overlay of VXLAN tunnels between
// nodes, kernel-compatible with flanneld's so that weft and flanneld nodes
// share one cluster.
//
// # What it programs
//
// One device, flannel.<VNI> (VXLAN, UDP port 8472 by default, nolearning,
// local address and underlay link = the node's external interface, MTU =
// the underlay's minus 50). The device carries <own subnet>.0/32. For each
// peer, in this order:
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
// # IPv6
//
// With EnableIPv6 a second device, flannel-v6.<VNI>, does the same for the
// IPv6 subnets over the IPv6 underlay (local address the interface's IPv6
// address, FDB destinations the peers' PublicIPv6, neighbour and route
// gateway the peer's IPv6 subnet address, BackendV6Data its MAC), as
// flanneld's does; in an IPv6-only network it is the only device. Each
// device is kept, adopted, self-healed and reconciled on its own, by the
// same code. VXLAN over IPv6 costs 70 bytes (outer IPv6 40, UDP 8, VXLAN 8,
// inner Ethernet 14) where IPv4 costs 50: flannel-v6.<VNI> gets the
// underlay's MTU minus 70, and pods (MTU()) get the smaller of the two
// devices' MTUs, so that a pod's packet fits either tunnel. flanneld uses 50
// for both, and pods' full-size IPv6 packets do not fit.
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
// Set verifies the kernel and repairs it.
//
// # The device and its MAC
//
// New adopts an existing flannel.<VNI> whose settings matter to the data
// plane as configured (VXLAN, VNI, port, local address, underlay link, GBP,
// learning off), whatever its MAC: its own device after an agent restart,
// or flanneld's on a node switching to Weft. It keeps the device's MAC and
// advertises it (LeaseAttrs), so that no peer has to change an entry and no
// packet is lost. Only a device created afresh gets a MAC chosen here: the
// VtepMAC of this node's lease if the store still holds one (a reboot: the
// peers still hold entries for that MAC), else one derived from the public
// address and the VNI. Once chosen, the MAC never changes for the life of
// the backend: a device deleted under it is recreated with the same MAC.
package vxlan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// DefaultVerifyEvery is how long Set trusts its memory of the kernel state
// before it reads the kernel again. The netlink subscription already
// reports every foreign change to our entries and every overrun of its
// socket (both invalidate the memory at once), so the periodic dump of
// 15,000 entries is only a backstop and need not be frequent.
const DefaultVerifyEvery = 5 * time.Minute

// Config holds what the constructor needs beyond backend.Params.
type Config = base.Options

// Spec returns the registry entry of the vxlan backend.
func Spec() backend.Spec {
	s := base.Spec(New, ValidateData)
	s.Plan = func(ctx context.Context, p backend.Params, st backend.State) (backend.Plan, error) {
		return Plan(ctx, p, Config{}, st)
	}
	return s
}

var _ backend.Backend = (*Backend)(nil)

// Backend is the vxlan backend. Create it with New.
type Backend struct {
	*base.Base
	// Short names for what Base holds (set once in New).
	log  *slog.Logger
	nl   netlinkx.Interface
	cfg  *subnet.Config
	ext  backend.ExternalInterface
	opts Options
	// previous looks up this node's previous lease (backend.Params).
	previous func(ctx context.Context) (*subnet.Lease, error)
	// v4 and v6 are the tunnels of the families that are on (nil when off),
	// each with its own programmer (Base has none).
	v4, v6 *tunnel
	// sets counts the calls of Set (guarded by SetMu): a tunnel that took
	// the state of call sets-1 may take the next one's changes alone
	// (backend.State.Incremental).
	sets uint64
}

// tunnel is one family's device and the entries it carries.
type tunnel struct {
	b    *Backend
	log  *slog.Logger
	six  bool
	name string
	// local is the underlay address the device sends from; pub the public
	// address its derived MAC is made from.
	local, pub netip.Addr
	network    netip.Prefix
	subnetLen  int
	// mac is the device's MAC, advertised in the lease: decided in New
	// (adopted or chosen by create) and never changed after it returns.
	mac  netlinkx.MAC
	mtu  int
	prog *netlinkx.Programmer

	// Guarded by the backend's SetMu.
	link       netlinkx.Link
	addrFor    netip.Prefix   // the own subnet whose address the device carries
	extPrefix  []netip.Prefix // connected prefixes of the underlay
	devChecked atomic.Bool    // the device is known to exist as configured
	linkIndex  atomic.Int64
	d          desiredState
	order      []subnetIndex // desired's buffer, kept between Sets
}

// The per-family views of a lease.
func (t *tunnel) subnetOf(l *subnet.Lease) netip.Prefix { return l.FamilySubnet(t.six) }

func (t *tunnel) publicIP(l *subnet.Lease) netip.Addr { return l.FamilyPublicIP(t.six) }

func (t *tunnel) data(l *subnet.Lease) json.RawMessage { return l.FamilyBackendData(t.six) }

func (t *tunnel) contains(p netip.Prefix) bool {
	if t.six {
		return t.b.cfg.ContainsIPv6(p)
	}
	return t.b.cfg.Contains(p)
}

func (t *tunnel) usable(ip netip.Addr) bool {
	if t.six {
		return subnet.IsUsableUnicast6(ip)
	}
	return ip.Is4() && subnet.IsUsableUnicast(ip)
}

func (t *tunnel) family() string {
	if t.six {
		return "IPv6"
	}
	return "IPv4"
}

// DeviceNameV6 returns the IPv6 VXLAN device's name, flannel-v6.<VNI>.
func (o Options) DeviceNameV6() string { return "flannel-v6." + strconv.Itoa(o.VNI) }

// New creates the backend: it parses the options in p.Config.Backend,
// adopts or creates the VXLAN device of each family that is on (see the
// package doc) and starts watching netlink. It programs no peers; call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return nil, err
	}
	cfg := p.Config
	if n := opts.DeviceNameV6(); cfg.EnableIPv6 && len(n) > 15 {
		return nil, fmt.Errorf("%w: VNI %d: device name %s is longer than the kernel's 15 characters; with IPv6 use a VNI below 10000", ErrInvalidOptions, opts.VNI, n)
	}
	b := &Backend{opts: opts, previous: p.Previous}
	device := opts.DeviceName()
	if !cfg.EnableIPv4 {
		device = opts.DeviceNameV6()
	}
	// The tunnels keep a programmer each: Base makes none (Owns nil).
	bb, err := base.New(ctx, p, c, base.Kind{Name: TypeName, Device: device, DefaultVerify: DefaultVerifyEvery})
	if err != nil {
		return nil, err
	}
	b.Base = bb
	b.log, b.nl, b.cfg, b.ext = bb.Log, bb.NL, bb.Cfg, bb.Ext
	if cfg.EnableIPv4 {
		b.v4 = b.newTunnel(false, bb.Verify)
	}
	if cfg.EnableIPv6 {
		b.v6 = b.newTunnel(true, bb.Verify)
	}
	for _, t := range b.tunnels() {
		if err := t.ensureDevice(ctx); err != nil {
			b.Close()
			return nil, err
		}
	}
	b.Follow(b.observe, b.Resync)
	return b, nil
}

func (b *Backend) newTunnel(six bool, verify time.Duration) *tunnel {
	t := &tunnel{b: b, six: six}
	if six {
		t.name, t.local, t.pub = b.opts.DeviceNameV6(), b.ext.Addr6, b.ext.PublicIPv6
		t.network, t.subnetLen = b.cfg.IPv6Network, b.cfg.IPv6SubnetLen
		t.mtu = b.ext.MTU - OverheadIPv6
	} else {
		t.name, t.local, t.pub = b.opts.DeviceName(), b.ext.Addr, b.ext.PublicIP
		t.network, t.subnetLen = b.cfg.Network, b.cfg.SubnetLen
		t.mtu = b.ext.MTU - Overhead
	}
	if !t.pub.IsValid() {
		t.pub = t.local
	}
	if b.opts.MTU != 0 {
		t.mtu = b.opts.MTU
	}
	t.log = b.log // Base's logger names the first device
	if six && b.cfg.EnableIPv4 {
		t.log = b.log.With("ipv6_device", t.name)
	}
	t.prog = netlinkx.NewProgrammer(b.nl, t.ownsRoute, verify)
	return t
}

// tunnels returns the tunnels of the families that are on.
func (b *Backend) tunnels() []*tunnel {
	var ts []*tunnel
	for _, t := range []*tunnel{b.v4, b.v6} {
		if t != nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// MTU implements backend.Backend: the smallest MTU of the devices, so that
// a pod's packet fits whichever tunnel carries it.
func (b *Backend) MTU() int {
	m := 0
	for _, t := range b.tunnels() {
		if m == 0 || t.mtu < m {
			m = t.mtu
		}
	}
	return m
}

// VtepMAC returns the MAC address of the IPv4 device (of the IPv6 device
// in an IPv6-only network), as advertised in the lease.
func (b *Backend) VtepMAC() netlinkx.MAC {
	if b.v4 != nil {
		return b.v4.mac
	}
	return b.v6.mac
}

// VtepMACv6 returns the IPv6 device's MAC address (zero when IPv6 is off).
func (b *Backend) VtepMACv6() netlinkx.MAC {
	if b.v6 == nil {
		return netlinkx.MAC{}
	}
	return b.v6.mac
}

// LeaseAttrs implements backend.Backend: BackendType "vxlan", and
// BackendData (IPv4) and BackendV6Data (IPv6) {"VNI":…,"VtepMAC":"…"}.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	attrs.BackendType = TypeName
	attrs.BackendData, attrs.BackendV6Data = nil, nil
	for _, t := range b.tunnels() {
		data, err := json.Marshal(BackendData{VNI: b.opts.VNI, VtepMAC: t.mac.String()})
		if err != nil {
			return fmt.Errorf("encoding vxlan backend data: %w", err)
		}
		if t.six {
			attrs.BackendV6Data = data
		} else {
			attrs.BackendData = data
		}
	}
	return nil
}

// Resync makes the next Set read the kernel state and check the devices
// rather than trust what it applied before.
func (b *Backend) Resync() {
	for _, t := range b.tunnels() {
		t.devChecked.Store(false)
		t.prog.Invalidate()
	}
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LostUpdates {
		b.log.Warn("netlink updates lost; the next Set reads the kernel state", "err", u.Err)
	}
	notify := false
	for _, t := range b.tunnels() {
		if u.Kind == netlinkx.LinkUpdate {
			l := u.Link
			ours := l.Name == t.name || (l.Index != 0 && int64(l.Index) == t.linkIndex.Load())
			if ours && (u.Deleted || !t.compatible(l) || !l.Up || l.MTU != t.mtu) {
				t.devChecked.Store(false)
				t.prog.Invalidate()
				notify = true
			}
			continue
		}
		if t.prog.Observe(u) {
			notify = true
		}
	}
	if notify {
		b.Sess.Notify()
	}
}

// compatible reports whether an existing link is our device as it should
// be: as configured and with the MAC the lease advertises.
func (t *tunnel) compatible(l netlinkx.Link) bool {
	return misfit(l, t.want()) == "" && l.MAC == t.mac
}

// want returns the device's settings as configured.
func (t *tunnel) want() netlinkx.VXLAN {
	return netlinkx.VXLAN{VNI: t.b.opts.VNI, Port: t.b.opts.Port, Local: t.local, VtepDevIndex: t.b.ext.Index, GBP: t.b.opts.GBP}
}

// misfit says why an existing link cannot carry the data plane as want
// describes it ("" when it can): every setting that decides how frames are
// encapsulated and to whom. The MAC is not compared (any unicast MAC can be
// adopted and advertised), nor the MTU, the state or the addresses, which
// the backend sets on the device it adopts.
func misfit(l netlinkx.Link, want netlinkx.VXLAN) string {
	v := l.VXLAN
	switch {
	case l.Type != "vxlan" || v == nil:
		return fmt.Sprintf("type %s, not vxlan", l.Type)
	case v.VNI != want.VNI:
		return fmt.Sprintf("VNI %d, want %d", v.VNI, want.VNI)
	case v.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", v.Port, want.Port)
	case v.Local != want.Local:
		return fmt.Sprintf("local address %v, want %v", v.Local, want.Local)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay link #%d, want #%d", v.VtepDevIndex, want.VtepDevIndex)
	case v.GBP != want.GBP:
		return fmt.Sprintf("GBP %t, want %t", v.GBP, want.GBP)
	case v.Learning:
		return "learning on, want off"
	case !l.MAC.IsUnicast():
		return fmt.Sprintf("MAC %s is not a unicast address", l.MAC)
	}
	return ""
}

// ensureDevice finds, adopts or creates the device and brings it to the
// configured MTU and up. Must hold SetMu or be in New.
func (t *tunnel) ensureDevice(ctx context.Context) error {
	nl := t.b.nl
	l, err := nl.LinkByName(t.name)
	why := ""
	if err == nil {
		why = misfit(l, t.want())
		if why == "" && !t.mac.IsZero() && l.MAC != t.mac {
			why = fmt.Sprintf("MAC %s, but the lease advertises %s", l.MAC, t.mac)
		}
	}
	switch {
	case errors.Is(err, netlinkx.ErrNotFound):
		l, err = t.create(ctx)
	case err != nil:
		return fmt.Errorf("vxlan backend: %w", err)
	case why != "":
		t.log.Warn("existing device is incompatible; recreating it", "index", l.Index, "reason", why)
		if err := nl.DeleteLink(l.Index); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
			return fmt.Errorf("vxlan backend: replacing incompatible %s (%s): %w", t.name, why, err)
		}
		l, err = t.create(ctx)
	case t.mac.IsZero():
		t.mac = l.MAC
		t.log.Info("adopting the existing device with its MAC", "index", l.Index, "mac", l.MAC.String())
	default:
		t.log.Debug("reusing existing device", "index", l.Index)
	}
	if err != nil {
		return err
	}
	if l.MTU != t.mtu {
		if err := nl.SetLinkMTU(l.Index, t.mtu); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	if !l.Up {
		if err := nl.SetLinkUp(l.Index); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	if l.Index != t.link.Index {
		t.addrFor = netip.Prefix{}
	}
	t.link = l
	t.linkIndex.Store(int64(l.Index))
	prefixes, err := nl.Addrs(t.b.ext.Index)
	if err != nil {
		return fmt.Errorf("vxlan backend: addresses of %s: %w", t.b.ext.Name, err)
	}
	t.extPrefix = prefixes
	t.devChecked.Store(true)
	return nil
}

// create creates the device, with the MAC already decided or, in New, the
// one chooseMAC picks.
func (t *tunnel) create(ctx context.Context) (netlinkx.Link, error) {
	if t.mac.IsZero() {
		t.mac = t.chooseMAC(ctx)
	}
	l, err := t.b.nl.AddVXLAN(netlinkx.NewVXLAN{
		Name:  t.name,
		MTU:   t.mtu,
		MAC:   t.mac,
		VXLAN: t.want(),
	})
	if err != nil {
		return l, fmt.Errorf("vxlan backend: %w", err)
	}
	t.log.Info("created device", "index", l.Index, "mac", t.mac.String(), "mtu", t.mtu)
	return l, nil
}

// chooseMAC picks the MAC of a device created in New: the VtepMAC of this
// node's previous lease for this family (BackendData, or BackendV6Data)
// when the store still holds one for this backend and VNI (after a reboot
// the peers still hold entries for it, so they need change nothing), else
// the one derived from the family's public address and the VNI. A failed
// lookup is logged and costs only that: the derived MAC, and peers update
// their entries when the lease is rewritten. The lookup is made once for
// both devices.
func (t *tunnel) chooseMAC(ctx context.Context) netlinkx.MAC {
	derived := VtepMAC(t.pub, t.b.opts.VNI)
	l, err := t.b.previousLease(ctx)
	if err != nil {
		t.log.Warn("cannot look up this node's previous lease; deriving the VTEP MAC", "err", err, "mac", derived.String())
		return derived
	}
	if l == nil {
		t.log.Info("no previous lease for this node; deriving the VTEP MAC", "mac", derived.String())
		return derived
	}
	if l.Attrs.BackendType != TypeName {
		t.log.Info("this node's previous lease is not a vxlan lease; deriving the VTEP MAC", "lease", l.Key(), "backend_type", l.Attrs.BackendType, "mac", derived.String())
		return derived
	}
	mac, err := ParseBackendData(t.data(l), t.b.opts.VNI)
	if err != nil {
		t.log.Info("this node's previous lease has no usable VTEP MAC; deriving one", "lease", l.Key(), "reason", err, "mac", derived.String())
		return derived
	}
	t.log.Info("taking the VTEP MAC of this node's previous lease", "lease", l.Key(), "mac", mac.String())
	return mac
}

// previousLease calls Params.Previous at most once (New's devices share
// the answer).
func (b *Backend) previousLease(ctx context.Context) (*subnet.Lease, error) {
	if b.previous == nil {
		return nil, nil
	}
	prev := b.previous
	var l *subnet.Lease
	var err error
	b.previous = func(context.Context) (*subnet.Lease, error) { return l, err }
	l, err = prev(ctx)
	return l, err
}

// ensureAddr gives the device the own subnet's address (<own>.0/32, or
// <own>::/128) and removes the family's other addresses (from older
// leases); IPv6 link-local addresses are the kernel's and stay.
func (t *tunnel) ensureAddr(own netip.Prefix) error {
	nl := t.b.nl
	want := netip.PrefixFrom(own.Addr(), own.Addr().BitLen())
	have, err := nl.Addrs(t.link.Index)
	if err != nil {
		return fmt.Errorf("vxlan backend: %w", err)
	}
	if !slices.Contains(have, want) {
		if err := nl.AddAddr(t.link.Index, want); err != nil {
			return fmt.Errorf("vxlan backend: %w", err)
		}
	}
	for _, p := range have {
		if p != want && p.Addr().Is4() == want.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
			if err := nl.DeleteAddr(t.link.Index, p); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
				return fmt.Errorf("vxlan backend: removing stale address: %w", err)
			}
		}
	}
	t.addrFor = own
	return nil
}

// ownsRoute reports whether a main-table route is one the tunnel manages:
// a route to a subnet of its family's network on its device, or with
// DirectRouting a gateway route on the underlay (not to our own subnet).
// A route to our own subnet on the device is the tunnel's too: it is left
// from when that subnet was a peer's (a lease lost and the subnet leased
// again), and no entry is desired for it, so it is removed.
func (t *tunnel) ownsRoute(r netlinkx.Route, link int) bool {
	if r.Dst.Addr().Is4() == t.six {
		return false
	}
	if link != 0 && r.LinkIndex == link {
		return t.b.NetworkSubnet(r.Dst)
	}
	return t.b.PeerSubnet(r.Dst) && t.b.opts.DirectRouting && r.LinkIndex == t.b.ext.Index && r.Gw.IsValid()
}

// Set implements backend.Backend: each family's tunnel is brought to s.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	b.sets++
	if err := b.Begin(ctx, s); err != nil {
		return err
	}
	var errs []error
	for _, t := range b.tunnels() {
		errs = append(errs, t.set(ctx, s))
	}
	return errors.Join(errs...)
}

func (t *tunnel) set(ctx context.Context, s backend.State) error {
	own := t.subnetOf(&s.Own)
	if !t.devChecked.Load() {
		if err := t.ensureDevice(ctx); err != nil {
			t.prog.Invalidate()
			return err
		}
	}
	if t.addrFor != own {
		if err := t.ensureAddr(own); err != nil {
			return err
		}
	}
	// Only a tunnel that took the previous Set's state has the changes up to
	// it (a Set may return before it takes its state); and the changed
	// subnets are named by the lease's primary subnet, which is the
	// tunnel's own subnet only in the family that comes first (IPv4, or
	// IPv6 in an IPv6-only network).
	incremental := s.Incremental && t.d.took == t.b.sets-1 && t.six == !t.b.cfg.EnableIPv4
	t.desired(s, incremental)
	t.d.took = t.b.sets
	var st netlinkx.Stats
	var err error
	if t.d.full {
		st, err = t.prog.Sync(t.link.Index, &t.d)
	} else {
		st, err = t.prog.SyncDelta(t.link.Index, &t.d, &t.d.delta)
	}
	t.d.full = false
	t.d.delta.Reset()
	return t.b.Done(len(s.Peers), st, err, t.d.errors())
}

// desired brings t.d (the desired entries and what they were derived from)
// to the peer set s, and records in t.d.delta the keys it changed. When the
// own subnet, the device or the underlay's prefixes changed since the last
// Set it starts from nothing; otherwise it derives entries only for the
// peers whose lease changed: with incremental, only for those s.Changed
// names. Peers without a subnet of the tunnel's family (IPv4-only nodes of
// a network turning IPv6 on) have no entries in it.
func (t *tunnel) desired(s backend.State, incremental bool) {
	d := &t.d
	own := t.subnetOf(&s.Own)
	basis := basis{own: own, link: t.link.Index, ext: fmt.Sprint(t.extPrefix)}
	if d.recs == nil || d.basis != basis {
		d.reset(basis, t.b.ext.Index, t.six, t.subnetLen)
	}
	if incremental && !d.full {
		// Only the named peers; every other one is as the last Set left it.
		for _, sn := range s.Changed {
			if sn.Addr().Is6() == t.six && sn != own && sn.IsValid() {
				t.derivePeer(sn, t.sortGroup(leaseGroup(s.Peers, sn)))
			}
		}
		d.resolve()
		return
	}
	peers := s.Peers
	// The peers in order of the tunnel's subnets: as given when they are
	// (the agent's set is sorted by IPv4 subnet), else through a sorted
	// index (the IPv6 subnets of a dual-stack set come in another order):
	// sorting small keys costs a fraction of sorting the leases.
	order := t.order[:0]
	if !slices.IsSortedFunc(peers, func(x, y subnet.Lease) int { return subnet.CompareSubnets(t.subnetOf(&x), t.subnetOf(&y)) }) {
		for i := range peers {
			order = append(order, subnetIndex{sn: t.subnetOf(&peers[i]), i: int32(i)})
		}
		slices.SortFunc(order, func(x, y subnetIndex) int { return subnet.CompareSubnets(x.sn, y.sn) })
		t.order = order
	}
	at := func(k int) *subnet.Lease {
		if len(order) > 0 {
			return &peers[order[k].i]
		}
		return &peers[k]
	}
	d.gen++
	seen := 0
	for i := 0; i < len(peers); {
		p := at(i)
		sn := t.subnetOf(p)
		j := i + 1
		for j < len(peers) && t.subnetOf(at(j)) == sn {
			j++
		}
		var group []subnet.Lease
		switch {
		case len(order) == 0 && j == i+1:
			group = peers[i:j]
		case j == i+1:
			group = peers[order[i].i : order[i].i+1]
		default:
			// Two leases claim one subnet (rare): in an order of their own,
			// so that the outcome does not depend on the order given.
			for k := i; k < j; k++ {
				group = append(group, *at(k))
			}
			group = t.sortGroup(group)
		}
		i = j
		if sn == own || !sn.IsValid() {
			continue
		}
		seen++
		t.derivePeer(sn, group)
	}
	if seen < len(d.recs) {
		for sn, rec := range d.recs {
			if rec.seen != d.gen {
				d.retract(sn, rec)
				delete(d.recs, sn)
			}
		}
	}
	d.resolve()
}

// subnetIndex is a peer's subnet in the tunnel's family and its position
// in the peer set.
type subnetIndex struct {
	sn netip.Prefix
	i  int32
}

// basis is what every desired entry depends on beyond its own peer: when
// it changes, the backend derives every entry again.
type basis struct {
	own  netip.Prefix
	link int
	ext  string
}

// peerRec is what the backend derived from one peer's lease at the last
// Set: enough to tell whether the lease changed, and the peer's entries
// (see desiredState). There is one per peer: it is kept small.
type peerRec struct {
	ip  netip.Addr
	typ string
	// data is the lease's BackendData (of the family), compared byte for
	// byte: the lease's own bytes, not a copy (leases are not modified
	// once handed to Set).
	data   json.RawMessage
	mac    netlinkx.MAC
	direct bool  // DirectRouting: a plain route via ip
	owns   bool  // its tunnel entries are in the desired state
	dup    int32 // how many leases claimed the subnet (>1: all skipped)
	// seen is the full derivation (desiredState.gen) that last saw the
	// peer; 32 bits (a wrap takes billions of Sets) keep the record in
	// 128 bytes.
	seen uint32
	err  error // why the peer is skipped, whatever the other peers
	// other is the lease's subnet of the other family: with the record's
	// own, it makes the lease's key.
	other netip.Prefix
}

// derivePeer brings the desired state for subnet sn to group, the leases
// that claim it (none: the peer is gone), and marks it seen.
func (t *tunnel) derivePeer(sn netip.Prefix, group []subnet.Lease) {
	d := &t.d
	rec := d.recs[sn]
	if len(group) == 0 {
		if rec != nil {
			d.retract(sn, rec)
			delete(d.recs, sn)
		}
		return
	}
	if rec != nil {
		rec.seen = d.gen
		if t.same(rec, group) {
			return
		}
	}
	d.retract(sn, rec)
	rec = t.derive(group)
	rec.seen = d.gen
	d.recs[sn] = rec
	d.contribute(sn, rec)
}

// sortGroup puts the leases claiming one subnet (two or more: rare) in an
// order of their own, so that the outcome does not depend on the order
// given.
func (t *tunnel) sortGroup(g []subnet.Lease) []subnet.Lease {
	if len(g) < 2 {
		return g
	}
	g = slices.Clone(g)
	slices.SortFunc(g, func(x, y subnet.Lease) int {
		return strings.Compare(x.Key()+" "+t.publicIP(&x).String(), y.Key()+" "+t.publicIP(&y).String())
	})
	return g
}

// leaseGroup returns the leases of peers (sorted by primary subnet, as
// backend.State.Incremental promises) whose primary subnet is sn.
func leaseGroup(peers []subnet.Lease, sn netip.Prefix) []subnet.Lease {
	i, _ := slices.BinarySearchFunc(peers, sn, func(l subnet.Lease, p netip.Prefix) int { return subnet.CompareSubnets(l.Primary(), p) })
	j := i
	for j < len(peers) && peers[j].Primary() == sn {
		j++
	}
	return peers[i:j]
}

// same reports whether rec was derived from a group of leases like g.
func (t *tunnel) same(rec *peerRec, g []subnet.Lease) bool {
	if len(g) != int(rec.dup) {
		return false
	}
	if len(g) > 1 {
		return false // rare: derive the errors again
	}
	p := &g[0]
	return t.publicIP(p) == rec.ip && p.Attrs.BackendType == rec.typ && bytes.Equal(t.data(p), rec.data) && t.otherSubnetOf(p) == rec.other
}

// otherSubnetOf returns the lease's subnet of the other family.
func (t *tunnel) otherSubnetOf(l *subnet.Lease) netip.Prefix {
	if t.six {
		return l.Subnet
	}
	return l.IPv6Subnet
}

// derive validates a peer (a group of leases for one subnet, normally one)
// and computes what its entries would be.
func (t *tunnel) derive(g []subnet.Lease) *peerRec {
	p := &g[0]
	ip := t.publicIP(p)
	sn := t.subnetOf(p)
	rec := &peerRec{ip: ip, typ: p.Attrs.BackendType, data: t.data(p), dup: int32(len(g)), other: t.otherSubnetOf(p)}
	fail := func(p *subnet.Lease, format string, args ...any) error {
		return fmt.Errorf("vxlan backend: skipping peer %s: %s", peerName(p.Key(), t.six, t.publicIP(p)), fmt.Sprintf(format, args...))
	}
	switch {
	case !t.contains(sn):
		rec.err = fail(p, "subnet %v is not a /%d of network %s", sn, t.subnetLen, t.network)
	case len(g) > 1:
		// Neither holder can be trusted; skipping all keeps the result
		// independent of the peers' order.
		var errs []error
		for i := range g {
			errs = append(errs, fail(&g[i], "another peer holds subnet %s", sn))
		}
		rec.err = errors.Join(errs...)
	case !t.usable(ip):
		rec.err = fail(p, "not a unicast %s address", t.family())
	case p.Attrs.BackendType != TypeName:
		rec.err = fail(p, "BackendType %q, want %q", p.Attrs.BackendType, TypeName)
	default:
		mac, err := ParseBackendData(t.data(p), t.b.opts.VNI)
		if err != nil {
			if t.six {
				err = fmt.Errorf("BackendV6Data: %w", err)
			}
			rec.err = fail(p, "%v", err)
			break
		}
		rec.mac = mac
		rec.direct = t.b.opts.DirectRouting && base.OnLink(t.extPrefix, ip)
	}
	return rec
}

// peerName names a peer in messages: its lease's key and public address.
func peerName(key string, six bool, ip netip.Addr) string {
	what := "PublicIP"
	if six {
		what = "PublicIPv6"
	}
	return fmt.Sprintf("%s (%s %v)", key, what, ip)
}

// desiredState is the backend's memory of the desired state: the peers it
// was derived from, maintained incrementally. It holds no entries of its
// own: it is the programmer's netlinkx.Desired as a view of the peer
// records (a neighbour, an FDB entry and an onlink route for each tunnel
// peer that owns its VtepMAC, a plain route for each DirectRouting peer),
// so that the entries are not held twice.
type desiredState struct {
	basis basis
	six   bool // the tunnel's family, for messages
	bits  int  // the length of the tunnel's subnets
	gen   uint32
	recs  map[netip.Prefix]*peerRec
	// claims holds, by VtepMAC, the tunnel peers claiming it, in subnet
	// order: the first gets the entries, the others are skipped.
	claims claimSet
	// bad holds the peers skipped, with the reason.
	bad map[netip.Prefix]error
	// owners and directs count the records that own tunnel entries and
	// the DirectRouting ones: the view's sizes.
	owners, directs int
	delta           netlinkx.Delta
	full            bool   // the next Sync compares everything (the records were rebuilt)
	took            uint64 // the Backend.Set call whose state this is
	touched         map[netlinkx.MAC]bool
	extIdx          int // the underlay's index, for DirectRouting routes
}

func (d *desiredState) reset(b basis, extIdx int, six bool, bits int) {
	d.basis, d.extIdx, d.six, d.bits = b, extIdx, six, bits
	d.recs = make(map[netip.Prefix]*peerRec)
	d.claims = newClaimSet()
	d.bad = make(map[netip.Prefix]error)
	d.owners, d.directs = 0, 0
	d.touched = make(map[netlinkx.MAC]bool)
	d.full = true
	d.delta.Reset()
}

// retract removes what rec (the peer's state so far, may be nil)
// contributed to the desired entries.
func (d *desiredState) retract(sn netip.Prefix, rec *peerRec) {
	if rec == nil {
		return
	}
	delete(d.bad, sn)
	switch {
	case rec.err != nil:
	case rec.direct:
		d.directs--
		d.delta.Routes = append(d.delta.Routes, sn)
	default:
		if rec.owns {
			d.drop(sn, rec)
		}
		d.claims.remove(rec.mac, sn)
		d.touched[rec.mac] = true
	}
}

// contribute adds what rec contributes to the desired entries (tunnel
// peers: see resolve).
func (d *desiredState) contribute(sn netip.Prefix, rec *peerRec) {
	switch {
	case rec.err != nil:
		d.bad[sn] = rec.err
	case rec.direct:
		d.directs++
		d.delta.Routes = append(d.delta.Routes, sn)
	default:
		d.claims.add(rec.mac, sn)
		d.touched[rec.mac] = true
	}
}

// drop removes a tunnel peer's three entries.
func (d *desiredState) drop(sn netip.Prefix, rec *peerRec) {
	rec.owns = false
	d.owners--
	gw := sn.Addr()
	f := netlinkx.FDB{LinkIndex: d.basis.link, MAC: rec.mac, Dst: rec.ip}
	d.delta.Neighs = append(d.delta.Neighs, gw)
	d.delta.Routes = append(d.delta.Routes, sn)
	d.delta.FDBs = append(d.delta.FDBs, f)
}

// resolve gives each VtepMAC whose claims changed to its first claimant,
// and skips the others.
func (d *desiredState) resolve() {
	idx := d.basis.link
	for mac := range d.touched {
		owner, ok := d.claims.owner(mac)
		if !ok {
			continue
		}
		for _, sn := range d.claims.others(mac) {
			rec := d.recs[sn]
			if rec.owns {
				d.drop(sn, rec)
			}
			d.bad[sn] = fmt.Errorf("vxlan backend: skipping peer %s: VtepMAC %s is already used by peer %s",
				peerName(d.key(sn, rec), d.six, rec.ip), mac, owner)
		}
		rec := d.recs[owner]
		delete(d.bad, owner)
		if rec.owns {
			continue
		}
		rec.owns = true
		d.owners++
		gw := owner.Addr()
		f := netlinkx.FDB{LinkIndex: idx, MAC: mac, Dst: rec.ip}
		d.delta.Neighs = append(d.delta.Neighs, gw)
		d.delta.FDBs = append(d.delta.FDBs, f)
		d.delta.Routes = append(d.delta.Routes, owner)
	}
	if len(d.touched) > keepTouched {
		// A full derive touched every MAC: a map that big would stay
		// allocated (and cost its size to clear) for the life of the
		// backend.
		d.touched = make(map[netlinkx.MAC]bool)
	} else {
		clear(d.touched)
	}
}

// key returns the key of the lease rec was derived from.
func (d *desiredState) key(sn netip.Prefix, rec *peerRec) string {
	if d.six {
		return subnet.SubnetKey(rec.other, sn)
	}
	return subnet.SubnetKey(sn, rec.other)
}

var _ netlinkx.Desired = (*desiredState)(nil)

// The desired entries, as a view of the records.

func (d *desiredState) neigh(sn netip.Prefix, rec *peerRec) netlinkx.Neigh {
	return netlinkx.Neigh{LinkIndex: d.basis.link, IP: sn.Addr(), MAC: rec.mac, Permanent: true}
}

func (d *desiredState) fdb(rec *peerRec) netlinkx.FDB {
	return netlinkx.FDB{LinkIndex: d.basis.link, MAC: rec.mac, Dst: rec.ip}
}

// route returns the peer's route, if it has one in the desired state.
func (d *desiredState) route(sn netip.Prefix, rec *peerRec) (netlinkx.Route, bool) {
	switch {
	case rec.err != nil:
		return netlinkx.Route{}, false
	case rec.direct:
		return netlinkx.Route{Dst: sn, Gw: rec.ip, LinkIndex: d.extIdx}, true
	case rec.owns:
		return netlinkx.Route{Dst: sn, Gw: sn.Addr(), LinkIndex: d.basis.link, OnLink: true}, true
	}
	return netlinkx.Route{}, false
}

// LookupNeigh implements netlinkx.Desired: the neighbour of the tunnel
// peer whose subnet's address is ip.
func (d *desiredState) LookupNeigh(ip netip.Addr) (netlinkx.Neigh, bool) {
	sn := netip.PrefixFrom(ip, d.bits)
	if rec := d.recs[sn]; rec != nil && rec.owns && sn.Addr() == ip {
		return d.neigh(sn, rec), true
	}
	return netlinkx.Neigh{}, false
}

// HasFDB implements netlinkx.Desired: f is the entry of the peer that owns
// its MAC.
func (d *desiredState) HasFDB(f netlinkx.FDB) bool {
	owner, ok := d.claims.owner(f.MAC)
	if !ok || f.LinkIndex != d.basis.link {
		return false
	}
	rec := d.recs[owner]
	return rec != nil && rec.owns && rec.ip == f.Dst
}

// LookupRoute implements netlinkx.Desired.
func (d *desiredState) LookupRoute(dst netip.Prefix) (netlinkx.Route, bool) {
	if rec := d.recs[dst]; rec != nil {
		return d.route(dst, rec)
	}
	return netlinkx.Route{}, false
}

// AllNeighs implements netlinkx.Desired.
func (d *desiredState) AllNeighs() iter.Seq2[netip.Addr, netlinkx.Neigh] {
	return func(yield func(netip.Addr, netlinkx.Neigh) bool) {
		for sn, rec := range d.recs {
			if rec.owns && !yield(sn.Addr(), d.neigh(sn, rec)) {
				return
			}
		}
	}
}

// AllFDBs implements netlinkx.Desired.
func (d *desiredState) AllFDBs() iter.Seq[netlinkx.FDB] {
	return func(yield func(netlinkx.FDB) bool) {
		for _, rec := range d.recs {
			if rec.owns && !yield(d.fdb(rec)) {
				return
			}
		}
	}
}

// AllRoutes implements netlinkx.Desired.
func (d *desiredState) AllRoutes() iter.Seq2[netip.Prefix, netlinkx.Route] {
	return func(yield func(netip.Prefix, netlinkx.Route) bool) {
		for sn, rec := range d.recs {
			if r, ok := d.route(sn, rec); ok && !yield(sn, r) {
				return
			}
		}
	}
}

// Counts implements netlinkx.Desired: each owner of a VtepMAC has one of
// each entry, and each DirectRouting peer a route.
func (d *desiredState) Counts() (neighs, fdbs, routes int) {
	return d.owners, d.owners, d.owners + d.directs
}

// keepTouched is the largest desiredState.touched map that resolve keeps
// for the next Set rather than letting it go.
const keepTouched = 256

// errors returns the reasons peers are skipped, in subnet order.
func (d *desiredState) errors() []error {
	if len(d.bad) == 0 {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(d.bad), subnet.CompareSubnets)
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = d.bad[k]
	}
	return errs
}
