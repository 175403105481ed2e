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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
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
	// Short names for what Base holds (set once in New), kept so that the
	// device code reads as before.
	log  *slog.Logger
	nl   netlinkx.Interface
	cfg  *subnet.Config
	ext  backend.ExternalInterface
	prog *netlinkx.Programmer

	opts Options
	pub  netip.Addr // the public address the derived MAC is made from
	// previous looks up this node's previous lease (backend.Params).
	previous func(ctx context.Context) (*subnet.Lease, error)
	// mac is the device's MAC, advertised in the lease: decided in New
	// (adopted or chosen by create) and never changed after it returns.
	mac netlinkx.MAC
	mtu int

	// Guarded by SetMu.
	link       netlinkx.Link
	addrFor    netip.Prefix   // the own subnet whose address the device carries
	extPrefix  []netip.Prefix // connected prefixes of the underlay
	devChecked atomic.Bool    // the device is known to exist as configured
	linkIndex  atomic.Int64
	d          desiredState
}

// New creates the backend: it parses the options in p.Config.Backend,
// adopts or creates the VXLAN device (see the package doc) and starts
// watching netlink. It programs no peers; call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return nil, err
	}
	b := &Backend{opts: opts, pub: p.Ext.PublicIP, previous: p.Previous}
	bb, err := base.New(ctx, p, c, base.Kind{
		Name: TypeName, Device: opts.DeviceName(), DefaultVerify: DefaultVerifyEvery, Owns: b.ownsRoute,
	})
	if err != nil {
		return nil, err
	}
	b.Base = bb
	b.log, b.nl, b.cfg, b.ext, b.prog = bb.Log, bb.NL, bb.Cfg, bb.Ext, bb.Prog
	if !b.pub.IsValid() {
		b.pub = p.Ext.Addr
	}
	b.mtu = opts.MTU
	if b.mtu == 0 {
		b.mtu = p.Ext.MTU - Overhead
	}
	if err := b.ensureDevice(ctx); err != nil {
		b.Close()
		return nil, err
	}
	b.Follow(b.observe, b.Resync)
	return b, nil
}

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

// Resync makes the next Set read the kernel state and check the device
// rather than trust what it applied before.
func (b *Backend) Resync() {
	b.devChecked.Store(false)
	b.prog.Invalidate()
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LinkUpdate {
		l := u.Link
		ours := l.Name == b.opts.DeviceName() || (l.Index != 0 && int64(l.Index) == b.linkIndex.Load())
		if ours && (u.Deleted || !b.compatible(l) || !l.Up || l.MTU != b.mtu) {
			b.devChecked.Store(false)
			b.prog.Invalidate()
			b.Sess.Notify()
		}
		return
	}
	if u.Kind == netlinkx.LostUpdates {
		b.log.Warn("netlink updates lost; the next Set reads the kernel state", "err", u.Err)
	}
	if b.prog.Observe(u) {
		b.Sess.Notify()
	}
}

// compatible reports whether an existing link is our device as it should
// be: as configured and with the MAC the lease advertises.
func (b *Backend) compatible(l netlinkx.Link) bool {
	return misfit(l, b.want()) == "" && l.MAC == b.mac
}

// want returns the device's settings as configured.
func (b *Backend) want() netlinkx.VXLAN {
	return netlinkx.VXLAN{VNI: b.opts.VNI, Port: b.opts.Port, Local: b.ext.Addr, VtepDevIndex: b.ext.Index, GBP: b.opts.GBP}
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
func (b *Backend) ensureDevice(ctx context.Context) error {
	name := b.opts.DeviceName()
	l, err := b.nl.LinkByName(name)
	why := ""
	if err == nil {
		why = misfit(l, b.want())
		if why == "" && !b.mac.IsZero() && l.MAC != b.mac {
			why = fmt.Sprintf("MAC %s, but the lease advertises %s", l.MAC, b.mac)
		}
	}
	switch {
	case errors.Is(err, netlinkx.ErrNotFound):
		l, err = b.create(ctx)
	case err != nil:
		return fmt.Errorf("vxlan backend: %w", err)
	case why != "":
		b.log.Warn("existing device is incompatible; recreating it", "index", l.Index, "reason", why)
		if err := b.nl.DeleteLink(l.Index); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
			return fmt.Errorf("vxlan backend: replacing incompatible %s (%s): %w", name, why, err)
		}
		l, err = b.create(ctx)
	case b.mac.IsZero():
		b.mac = l.MAC
		b.log.Info("adopting the existing device with its MAC", "index", l.Index, "mac", l.MAC.String())
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

// create creates the device, with the MAC already decided or, in New, the
// one chooseMAC picks.
func (b *Backend) create(ctx context.Context) (netlinkx.Link, error) {
	if b.mac.IsZero() {
		b.mac = b.chooseMAC(ctx)
	}
	l, err := b.nl.AddVXLAN(netlinkx.NewVXLAN{
		Name:  b.opts.DeviceName(),
		MTU:   b.mtu,
		MAC:   b.mac,
		VXLAN: b.want(),
	})
	if err != nil {
		return l, fmt.Errorf("vxlan backend: %w", err)
	}
	b.log.Info("created device", "index", l.Index, "mac", b.mac.String(), "mtu", b.mtu)
	return l, nil
}

// chooseMAC picks the MAC of a device created in New: the VtepMAC of this
// node's previous lease when the store still holds one for this backend and
// VNI (after a reboot the peers still hold entries for it, so they need
// change nothing), else the one derived from the public address and the
// VNI. A failed lookup is logged and costs only that: the derived MAC, and
// peers update their entries when the lease is rewritten.
func (b *Backend) chooseMAC(ctx context.Context) netlinkx.MAC {
	derived := VtepMAC(b.pub, b.opts.VNI)
	if b.previous == nil {
		return derived
	}
	l, err := b.previous(ctx)
	if err != nil {
		b.log.Warn("cannot look up this node's previous lease; deriving the VTEP MAC", "err", err, "mac", derived.String())
		return derived
	}
	if l == nil {
		b.log.Info("no previous lease for this node; deriving the VTEP MAC", "mac", derived.String())
		return derived
	}
	if l.Attrs.BackendType != TypeName {
		b.log.Info("this node's previous lease is not a vxlan lease; deriving the VTEP MAC", "lease", l.Key(), "backend_type", l.Attrs.BackendType, "mac", derived.String())
		return derived
	}
	mac, err := ParseBackendData(l.Attrs.BackendData, b.opts.VNI)
	if err != nil {
		b.log.Info("this node's previous lease has no usable VTEP MAC; deriving one", "lease", l.Key(), "reason", err, "mac", derived.String())
		return derived
	}
	b.log.Info("taking the VTEP MAC of this node's previous lease", "lease", l.Key(), "mac", mac.String())
	return mac
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
	if !b.PeerSubnet(r.Dst) {
		return false
	}
	if link != 0 && r.LinkIndex == link {
		return true
	}
	return b.opts.DirectRouting && r.LinkIndex == b.ext.Index && r.Gw.IsValid()
}

// Set implements backend.Backend.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	if err := b.Begin(ctx, s); err != nil {
		return err
	}
	own := s.Own.Subnet
	if !b.devChecked.Load() {
		if err := b.ensureDevice(ctx); err != nil {
			b.prog.Invalidate()
			return err
		}
	}
	if b.addrFor != own {
		if err := b.ensureAddr(own); err != nil {
			return err
		}
	}
	b.desired(s)
	var st netlinkx.Stats
	var err error
	if b.d.full {
		st, err = b.prog.Sync(b.link.Index, b.d.want)
	} else {
		st, err = b.prog.SyncDelta(b.link.Index, b.d.want, &b.d.delta)
	}
	b.d.full = false
	b.d.delta.Reset()
	return b.Done(len(s.Peers), st, err, b.d.errors())
}

// desired brings b.d (the desired entries and what they were derived from)
// to the peer set s, and records in b.d.delta the keys it changed. When the
// own subnet, the device or the underlay's prefixes changed since the last
// Set it starts from nothing; otherwise it derives entries only for the
// peers whose lease changed.
func (b *Backend) desired(s backend.State) {
	d := &b.d
	basis := basis{own: s.Own.Subnet, link: b.link.Index, ext: fmt.Sprint(b.extPrefix)}
	if d.recs == nil || d.basis != basis {
		d.reset(basis, b.ext.Index)
	}
	peers := s.Peers
	if !slices.IsSortedFunc(peers, compareLease) {
		// Conflicts (two peers claiming one VtepMAC or one subnet) resolve
		// the same way whatever the order of s.Peers.
		peers = slices.Clone(peers)
		slices.SortFunc(peers, compareLease)
	}
	d.gen++
	seen := 0
	for i := 0; i < len(peers); {
		p := &peers[i]
		j := i + 1
		for j < len(peers) && peers[j].Subnet == p.Subnet {
			j++
		}
		group := peers[i:j]
		i = j
		if p.Subnet == s.Own.Subnet {
			continue
		}
		seen++
		rec := d.recs[p.Subnet]
		if rec != nil {
			rec.seen = d.gen
			if rec.same(group) {
				continue
			}
		}
		d.retract(p.Subnet, rec)
		rec = b.derive(group)
		rec.seen = d.gen
		d.recs[p.Subnet] = rec
		d.contribute(p.Subnet, rec)
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

// compareLease orders leases by subnet.
func compareLease(x, y subnet.Lease) int { return comparePrefix(x.Subnet, y.Subnet) }

// basis is what every desired entry depends on beyond its own peer: when
// it changes, the backend derives every entry again.
type basis struct {
	own  netip.Prefix
	link int
	ext  string
}

// peerRec is what the backend derived from one peer's lease at the last
// Set: enough to tell whether the lease changed, and the peer's entries.
type peerRec struct {
	ip     netip.Addr
	typ    string
	data   string // BackendData as given, compared byte for byte
	mac    netlinkx.MAC
	err    error // why the peer is skipped, whatever the other peers
	dup    int   // how many leases claimed the subnet (>1: all skipped)
	direct bool  // DirectRouting: a plain route via ip
	owns   bool  // its tunnel entries are in the desired state
	seen   uint64
}

// same reports whether rec was derived from a group of leases like g.
func (rec *peerRec) same(g []subnet.Lease) bool {
	if len(g) != rec.dup {
		return false
	}
	if len(g) > 1 {
		return false // rare: derive the errors again
	}
	a := &g[0].Attrs
	return a.PublicIP == rec.ip && a.BackendType == rec.typ && string(a.BackendData) == rec.data
}

// derive validates a peer (a group of leases for one subnet, normally one)
// and computes what its entries would be.
func (b *Backend) derive(g []subnet.Lease) *peerRec {
	p := &g[0]
	rec := &peerRec{ip: p.Attrs.PublicIP, typ: p.Attrs.BackendType, data: string(p.Attrs.BackendData), dup: len(g)}
	fail := b.Skip
	ip := p.Attrs.PublicIP
	switch {
	case !b.cfg.Contains(p.Subnet):
		rec.err = fail(p, "subnet %v is not a /%d of network %s", p.Subnet, b.cfg.SubnetLen, b.cfg.Network)
	case len(g) > 1:
		// Neither holder can be trusted; skipping all keeps the result
		// independent of the peers' order.
		var errs []error
		for i := range g {
			errs = append(errs, fail(&g[i], "another peer holds subnet %s", p.Subnet))
		}
		rec.err = errors.Join(errs...)
	case !ip.Is4() || !subnet.IsUsableUnicast(ip):
		rec.err = fail(p, "PublicIP is not a unicast IPv4 address")
	case p.Attrs.BackendType != TypeName:
		rec.err = fail(p, "BackendType %q, want %q", p.Attrs.BackendType, TypeName)
	default:
		mac, err := ParseBackendData(p.Attrs.BackendData, b.opts.VNI)
		if err != nil {
			rec.err = fail(p, "%v", err)
			break
		}
		rec.mac = mac
		rec.direct = b.opts.DirectRouting && base.OnLink(b.extPrefix, ip)
	}
	return rec
}

// desiredState is the backend's memory of the desired state: the peers it
// was derived from and the entries, maintained incrementally.
type desiredState struct {
	basis basis
	gen   uint64
	recs  map[netip.Prefix]*peerRec
	// claims holds, by VtepMAC, the tunnel peers claiming it, in subnet
	// order: the first gets the entries, the others are skipped.
	claims map[netlinkx.MAC][]netip.Prefix
	// bad holds the peers skipped, with the reason.
	bad     map[netip.Prefix]error
	want    netlinkx.Entries
	delta   netlinkx.Delta
	full    bool // the next Sync compares everything (want was rebuilt)
	touched map[netlinkx.MAC]bool
	extIdx  int // the underlay's index, for DirectRouting routes
}

func (d *desiredState) reset(b basis, extIdx int) {
	d.basis, d.extIdx = b, extIdx
	d.recs = make(map[netip.Prefix]*peerRec)
	d.claims = make(map[netlinkx.MAC][]netip.Prefix)
	d.bad = make(map[netip.Prefix]error)
	d.want = netlinkx.NewEntries(0)
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
		delete(d.want.Routes, sn)
		d.delta.Routes = append(d.delta.Routes, sn)
	default:
		cl := d.claims[rec.mac]
		if rec.owns {
			d.drop(sn, rec)
		}
		if i := slices.Index(cl, sn); i >= 0 {
			d.claims[rec.mac] = slices.Delete(cl, i, i+1)
		}
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
		d.want.Routes[sn] = netlinkx.Route{Dst: sn, Gw: rec.ip, LinkIndex: d.extIdx}
		d.delta.Routes = append(d.delta.Routes, sn)
	default:
		cl := d.claims[rec.mac]
		i, _ := slices.BinarySearchFunc(cl, sn, comparePrefix)
		d.claims[rec.mac] = slices.Insert(cl, i, sn)
		d.touched[rec.mac] = true
	}
}

// drop removes a tunnel peer's three entries.
func (d *desiredState) drop(sn netip.Prefix, rec *peerRec) {
	rec.owns = false
	gw := sn.Addr()
	delete(d.want.Neighs, gw)
	delete(d.want.Routes, sn)
	f := netlinkx.FDB{LinkIndex: d.basis.link, MAC: rec.mac, Dst: rec.ip}
	delete(d.want.FDBs, f)
	d.delta.Neighs = append(d.delta.Neighs, gw)
	d.delta.Routes = append(d.delta.Routes, sn)
	d.delta.FDBs = append(d.delta.FDBs, f)
}

// resolve gives each VtepMAC whose claims changed to its first claimant,
// and skips the others.
func (d *desiredState) resolve() {
	idx := d.basis.link
	for mac := range d.touched {
		cl := d.claims[mac]
		if len(cl) == 0 {
			delete(d.claims, mac)
			continue
		}
		owner := cl[0]
		for _, sn := range cl[1:] {
			rec := d.recs[sn]
			if rec.owns {
				d.drop(sn, rec)
			}
			d.bad[sn] = base.SkipError(TypeName, subnet.SubnetKey(sn, netip.Prefix{}), rec.ip, "VtepMAC %s is already used by peer %s", mac, owner)
		}
		rec := d.recs[owner]
		delete(d.bad, owner)
		if rec.owns {
			continue
		}
		rec.owns = true
		gw := owner.Addr()
		d.want.Neighs[gw] = netlinkx.Neigh{LinkIndex: idx, IP: gw, MAC: mac, Permanent: true}
		f := netlinkx.FDB{LinkIndex: idx, MAC: mac, Dst: rec.ip}
		d.want.FDBs[f] = struct{}{}
		d.want.Routes[owner] = netlinkx.Route{Dst: owner, Gw: gw, LinkIndex: idx, OnLink: true}
		d.delta.Neighs = append(d.delta.Neighs, gw)
		d.delta.FDBs = append(d.delta.FDBs, f)
		d.delta.Routes = append(d.delta.Routes, owner)
	}
	clear(d.touched)
}

// errors returns the reasons peers are skipped, in subnet order.
func (d *desiredState) errors() []error {
	if len(d.bad) == 0 {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(d.bad), comparePrefix)
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = d.bad[k]
	}
	return errs
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}
