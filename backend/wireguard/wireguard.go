// Package wireguard is the wireguard backend: pod traffic between nodes
// encrypted by WireGuard, lease-compatible with flanneld's wireguard
// backend, on the kernel's WireGuard where the kernel has it and on
// wireguard-go inside the agent where it does not (see kernel/wg for the
// two engines).
//
// # What it programs
//
// One device, flannel-wg, listening on ListenPort with the node's private
// key (kept in flanneld's key file), MTU = the underlay's minus 60 (IPv4
// endpoints), up, carrying <own subnet>.0/32, and one route:
//
//	route <Network> dev flannel-wg scope link
//
// and for each peer one WireGuard peer:
//
//	peer <PublicKey> endpoint <PublicIP>:<Port> allowed-ips <peer subnet>
//	     [preshared-key <PSK>] [persistent-keepalive <N>]
//
// WireGuard's allowed IPs route each packet to its peer, so there are no
// per-peer kernel routes (as in flanneld).
//
// # IPv6
//
// With IPv6 on in Mode separate (the default), a second device,
// flannel-wg-v6, does the same for the IPv6 subnets: ListenPortV6, the
// same key, MTU = underlay − 80, <own IPv6 subnet>::/128, the route to
// IPv6Network, and per peer with an IPv6 subnet a peer at
// [PublicIPv6]:<BackendV6Data Port>; in an IPv6-only network it is the
// only device. In the single-tunnel modes (auto, ipv4, ipv6) one
// flannel-wg carries both families: both addresses and routes, one peer
// per lease with both subnets, at the endpoint the mode picks (single.go).
//
// # How
//
// Set computes the desired peers from the peer set and diffs them against
// the device's current peers (Engine.Peers): it sets those missing or
// different (adds first), then removes those not wanted. The route is kept
// by a netlinkx.Programmer, the address and link state by a check that
// runs when netlink reports a change to the device and every verify
// period. Close leaves the device, its peers (kernel engine), its address
// and route in place. The userspace engine's peers live in the process:
// a restarted agent re-opens the persistent TUN, configures them again and
// starts a handshake to each.
package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/wg"
	"github.com/weftnet/weft/subnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// SocketDirEnv names the environment variable that sets the userspace
// engine's UAPI socket directory (default DefaultSocketDir, where `wg show`
// looks). Hosts sharing /run (namespace hosts) each need their own.
const (
	SocketDirEnv     = "WEFT_WIREGUARD_SOCKET_DIR"
	DefaultSocketDir = "/var/run/wireguard"
)

// DefaultVerifyEvery is how long Set trusts that the device, its address
// and its route are as it left them before it reads the kernel again
// (netlink updates about the device invalidate that sooner).
const DefaultVerifyEvery = 10 * time.Second

// Host holds the per-host settings, which the network config (shared by
// every node) cannot carry.
type Host struct {
	// KeyFile is the private key file (DefaultKeyFile).
	KeyFile string
	// SocketDir is the userspace engine's UAPI socket directory
	// (DefaultSocketDir); "-" serves no socket.
	SocketDir string
}

// HostFromEnv reads Host from WIREGUARD_KEY_FILE (flanneld's) and
// WEFT_WIREGUARD_SOCKET_DIR.
func HostFromEnv(getenv func(string) string) Host {
	h := Host{KeyFile: getenv(KeyFileEnv), SocketDir: getenv(SocketDirEnv)}
	if h.KeyFile == "" {
		h.KeyFile = DefaultKeyFile
	}
	if h.SocketDir == "" {
		h.SocketDir = DefaultSocketDir
	}
	return h
}

// Config holds what the constructor needs beyond backend.Params.
type Config struct {
	Host Host
	// Netlink is the namespace to program; nil opens the current one (and
	// the backend closes it on Close).
	Netlink netlinkx.Interface
	// Open opens the engine (nil: wg.Open, in the current namespace).
	Open func(wg.Device, wg.Options) (wg.Engine, error)
	// VerifyEvery overrides DefaultVerifyEvery; negative means always.
	VerifyEvery time.Duration
	// Inspect reads the device's engine and peers for Plan (nil:
	// wg.Inspect, in the current namespace, through Host.SocketDir).
	Inspect func(name, socketDir string) (wg.Kind, []wg.Peer, error)
}

// Spec returns the registry entry of the wireguard backend; its per-host
// settings come from the environment.
func Spec() backend.Spec {
	return backend.Spec{
		New: func(ctx context.Context, p backend.Params) (backend.Backend, error) {
			return New(ctx, p, Config{Host: HostFromEnv(os.Getenv)})
		},
		ValidateData: ValidateData,
		Plan: func(ctx context.Context, p backend.Params, s backend.State) (backend.Plan, error) {
			return Plan(ctx, p, Config{Host: HostFromEnv(os.Getenv)}, s)
		},
	}
}

var _ backend.Backend = (*Backend)(nil)

// Backend is the wireguard backend. Create it with New.
type Backend struct {
	*base.Base
	opts Options
	host Host
	open func(wg.Device, wg.Options) (wg.Engine, error)
	key  wgtypes.Key
	pub  wgtypes.Key
	// newKey says key was made at this start (see wg.Options.NewKey).
	newKey bool
	verify time.Duration
	// v4 and v6 are the devices of the families that are on (nil when
	// off): flannel-wg and flannel-wg-v6. In a single-tunnel Mode with
	// IPv6 on, v4 is the one device (carrying both families) and v6 nil.
	v4, v6 *device
}

// device is one family's WireGuard device, its peers and its route; or,
// in a single-tunnel Mode with IPv6 on, the one device carrying both
// families (single).
type device struct {
	b      *Backend
	six    bool
	single bool
	name   string
	port   int
	mtu    int
	// nets are the networks the device carries (its routes).
	nets []netip.Prefix
	log  *slog.Logger
	prog *netlinkx.Programmer

	// Guarded by SetMu.
	engine    wg.Engine
	link      netlinkx.Link
	addrFor   [2]netip.Prefix
	checkedAt time.Time
	// advertised is the endpoint each peer's lease gave when its peer was
	// last set: a peer whose device endpoint differs from it has roamed
	// (see roamed).
	advertised map[wg.Key]netip.AddrPort

	kind      atomic.Value // wg.Kind
	devOK     atomic.Bool
	linkIndex atomic.Int64
}

// New creates the backend: it parses the options, loads or makes the
// private key, opens the engine of each family's device (creating or
// adopting flannel-wg and, with IPv6, flannel-wg-v6) and starts watching
// netlink. It programs no peers; call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return nil, err
	}
	if c.Host.KeyFile == "" {
		c.Host.KeyFile = DefaultKeyFile
	}
	b := &Backend{opts: opts, host: c.Host, open: c.Open, verify: c.VerifyEvery}
	if b.open == nil {
		b.open = wg.Open
	}
	if b.verify == 0 {
		b.verify = DefaultVerifyEvery
	}
	mtu4, mtu6, err := deviceMTUs(opts, p)
	if err != nil {
		return nil, err
	}
	key, created, err := LoadOrCreateKey(c.Host.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("wireguard backend: %w", err)
	}
	b.key, b.pub, b.newKey = key, key.PublicKey(), created
	name := DeviceName
	if !p.Config.EnableIPv4 {
		name = DeviceNameV6
	}
	// The devices keep a programmer each: Base makes none (Owns nil).
	b.Base, err = base.New(ctx, p, base.Options{Netlink: c.Netlink, VerifyEvery: c.VerifyEvery},
		base.Kind{Name: TypeName, Device: name, DefaultVerify: DefaultVerifyEvery})
	if err != nil {
		return nil, err
	}
	if created {
		b.Log.Info("made a WireGuard private key", "key_file", c.Host.KeyFile, "public_key", b.pub.String())
	} else {
		b.Log.Info("using the WireGuard private key", "key_file", c.Host.KeyFile, "public_key", b.pub.String())
	}
	b.makeDevices(mtu4, mtu6)
	for _, d := range b.devices() {
		err := d.openEngine()
		if err == nil {
			if err = d.ensureDevice(); err != nil {
				d.engine.Close()
			}
		}
		if err != nil {
			for _, o := range b.devices() {
				if o != d && o.engine != nil {
					o.engine.Close()
				}
			}
			b.Base.Close()
			return nil, err
		}
	}
	b.Follow(b.observe, b.Resync)
	return b, nil
}

func (b *Backend) newDevice(six bool, mtu int) *device {
	d := &device{b: b, six: six, name: DeviceName, port: b.opts.ListenPort, mtu: mtu, nets: []netip.Prefix{b.Cfg.Network}, log: b.Log}
	switch {
	case b.Cfg.EnableIPv6 && b.opts.Mode.singleTunnel():
		d.six, d.single, d.nets = false, true, nil
		if b.Cfg.EnableIPv4 {
			d.nets = append(d.nets, b.Cfg.Network)
		}
		d.nets = append(d.nets, b.Cfg.IPv6Network)
	case six:
		d.name, d.port, d.nets = DeviceNameV6, b.opts.ListenPortV6, []netip.Prefix{b.Cfg.IPv6Network}
		if b.Cfg.EnableIPv4 {
			d.log = b.Log.With("ipv6_device", d.name)
		}
	}
	d.prog = netlinkx.NewProgrammer(b.NL, d.ownsRoute, b.Verify)
	return d
}

// makeDevices makes the device of each family that is on; in a
// single-tunnel Mode with IPv6 on, the one device (kept in v4).
func (b *Backend) makeDevices(mtu4, mtu6 int) {
	switch {
	case b.Cfg.EnableIPv6 && b.opts.Mode.singleTunnel():
		b.v4 = b.newDevice(false, mtu4)
	default:
		if b.Cfg.EnableIPv4 {
			b.v4 = b.newDevice(false, mtu4)
		}
		if b.Cfg.EnableIPv6 {
			b.v6 = b.newDevice(true, mtu6)
		}
	}
}

// devices returns the devices of the families that are on, IPv4 first.
func (b *Backend) devices() []*device {
	var ds []*device
	for _, d := range []*device{b.v4, b.v6} {
		if d != nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// deviceMTUs returns the MTU of the IPv4 and the IPv6 device: the
// underlay's MTU (the option, else the external interface's) minus the
// overhead of the device's endpoints' family.
func deviceMTUs(opts Options, p backend.Params) (mtu4, mtu6 int, err error) {
	underlay := opts.MTU
	if underlay == 0 {
		underlay = p.Ext.MTU
	}
	overhead4, on4, on6 := OverheadIPv4, p.Config.EnableIPv4, p.Config.EnableIPv6
	if opts.Mode == ModeIPv6 || (opts.Mode == ModeAuto && p.Config.EnableIPv6) {
		overhead4 = OverheadIPv6 // endpoints over IPv6
	}
	if p.Config.EnableIPv6 && opts.Mode.singleTunnel() {
		on4, on6 = true, false // the one device, with mtu4
	}
	for _, f := range []struct {
		on       bool
		overhead int
		mtu      *int
	}{{on4, overhead4, &mtu4}, {on6, OverheadIPv6, &mtu6}} {
		if !f.on {
			continue
		}
		*f.mtu = underlay - f.overhead
		if *f.mtu < 576 || (p.Config.EnableIPv6 && *f.mtu < 1280) {
			return 0, 0, fmt.Errorf("wireguard backend: device MTU %d (underlay MTU %d minus %d) is too small", *f.mtu, underlay, f.overhead)
		}
	}
	return mtu4, mtu6, nil
}

// openEngine opens the engine on the device. Must hold SetMu or be in New.
func (d *device) openEngine() error {
	b := d.b
	sock := b.host.SocketDir
	if sock == "-" {
		sock = ""
	}
	e, err := b.open(wg.Device{Name: d.name, PrivateKey: b.key, ListenPort: d.port, MTU: d.mtu},
		wg.Options{Choice: b.opts.Engine, SocketDir: sock, Log: d.log, NewKey: b.newKey})
	if err != nil {
		return fmt.Errorf("wireguard backend: %s: %w", d.name, err)
	}
	d.engine = e
	d.kind.Store(e.Kind())
	d.log.Info("WireGuard engine", "engine", string(e.Kind()), "choice", string(b.opts.Engine), "name", d.name,
		"listen_port", d.port, "mtu", d.mtu, "public_key", b.pub.String())
	return nil
}

// MTU implements backend.Backend: the smallest MTU of the devices, so that
// a pod's packet fits whichever device carries it.
func (b *Backend) MTU() int {
	m := 0
	for _, d := range b.devices() {
		if m == 0 || d.mtu < m {
			m = d.mtu
		}
	}
	return m
}

// Engine returns the engine in use, "kernel" or "userspace" (the IPv4
// device's; the IPv6 device's in an IPv6-only network).
func (b *Backend) Engine() string { return b.devices()[0].engineKind() }

func (d *device) engineKind() string {
	k, _ := d.kind.Load().(wg.Kind)
	return string(k)
}

// PublicKey returns this node's public key, as advertised in the lease.
func (b *Backend) PublicKey() wgtypes.Key { return b.pub }

// LeaseAttrs implements backend.Backend: BackendType "wireguard",
// BackendData {"PublicKey":…,"Port":ListenPort,"Engine":…} with IPv4, and
// BackendV6Data {"PublicKey":…,"Port":ListenPortV6,"Engine":…} (the same
// key) with IPv6.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	attrs.BackendType = TypeName
	attrs.BackendData, attrs.BackendV6Data = nil, nil
	for _, f := range []struct {
		on   bool
		d    *device
		port int
		out  *json.RawMessage
	}{
		{b.Cfg.EnableIPv4, b.v4, b.opts.ListenPort, &attrs.BackendData},
		{b.Cfg.EnableIPv6, b.v6, b.opts.AdvertisedV6Port(), &attrs.BackendV6Data},
	} {
		if !f.on {
			continue
		}
		if f.d == nil {
			f.d = b.v4 // the single tunnel
		}
		data, err := json.Marshal(BackendData{PublicKey: b.pub.String(), Port: f.port, Engine: f.d.engineKind()})
		if err != nil {
			return fmt.Errorf("encoding wireguard backend data: %w", err)
		}
		*f.out = data
	}
	return nil
}

// Resync makes the next Set check the devices and read the kernel's routes.
func (b *Backend) Resync() {
	for _, d := range b.devices() {
		d.devOK.Store(false)
		d.prog.Invalidate()
	}
}

// Close implements backend.Backend: it stops watching netlink and closes
// the engines, leaving the devices, their addresses and routes in place
// (and the kernel engine's peers).
func (b *Backend) Close() error {
	b.Base.Close()
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	var errs []error
	for _, d := range b.devices() {
		errs = append(errs, d.engine.Close())
	}
	return errors.Join(errs...)
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LostUpdates {
		b.Log.Warn("netlink updates lost; the next Set reads the kernel state", "err", u.Err)
	}
	notify := false
	for _, d := range b.devices() {
		if u.Kind == netlinkx.LinkUpdate {
			l := u.Link
			ours := l.Name == d.name || (l.Index != 0 && int64(l.Index) == d.linkIndex.Load())
			if ours && (u.Deleted || !l.Up || l.MTU != d.mtu) {
				d.devOK.Store(false)
				d.prog.Invalidate()
				notify = true
			}
			continue
		}
		if d.prog.Observe(u) {
			notify = true
		}
	}
	if notify {
		b.Sess.Notify()
	}
}

// ownsRoute: the route to the family's whole network on the device (the
// link the programmer is given is 0: it owns no neighbours or FDB entries).
func (d *device) ownsRoute(r netlinkx.Route, _ int) bool {
	return slices.Contains(d.nets, r.Dst) && !r.Gw.IsValid() && int64(r.LinkIndex) == d.linkIndex.Load()
}

// ensureDevice checks that the device exists (opening the engine again if
// someone deleted it), with the MTU, up. Must hold SetMu or be in New.
func (d *device) ensureDevice() error {
	nl := d.b.NL
	l, err := nl.LinkByName(d.name)
	if errors.Is(err, netlinkx.ErrNotFound) {
		d.log.Warn("the WireGuard device is gone; making it again", "name", d.name)
		if cerr := d.engine.Close(); cerr != nil {
			d.log.Warn("closing the engine of the lost device", "err", cerr)
		}
		if err := d.openEngine(); err != nil {
			return err
		}
		l, err = nl.LinkByName(d.name)
	}
	if err != nil {
		return fmt.Errorf("wireguard backend: %w", err)
	}
	if l.MTU != d.mtu {
		if err := nl.SetLinkMTU(l.Index, d.mtu); err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
	}
	if !l.Up {
		if err := nl.SetLinkUp(l.Index); err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
	}
	if l.Index != d.link.Index {
		d.addrFor = [2]netip.Prefix{}
		d.prog.Invalidate()
	}
	d.link = l
	d.linkIndex.Store(int64(l.Index))
	return nil
}

// ownAddr is the device's address for the own subnet: its network address
// as a /32 (IPv4) or /128 (IPv6), as flanneld's.
func ownAddr(own netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(own.Addr(), own.Addr().BitLen())
}

// owns returns the own subnets of the families the device carries (the
// zero Prefix for the others).
func (d *device) owns(l *subnet.Lease) [2]netip.Prefix {
	var o [2]netip.Prefix
	if d.single {
		if d.b.Cfg.EnableIPv4 {
			o[0] = l.Subnet
		}
		o[1] = l.IPv6Subnet
		return o
	}
	o[0] = d.subnetOf(l)
	return o
}

// ensureAddr gives the device the own subnets' addresses and removes its
// other addresses inside its networks (from older leases), as flanneld.
func (d *device) ensureAddr(own [2]netip.Prefix) error {
	nl := d.b.NL
	var wants []netip.Prefix
	for _, o := range own {
		if o.IsValid() {
			wants = append(wants, ownAddr(o))
		}
	}
	have, err := nl.Addrs(d.link.Index)
	if err != nil {
		return fmt.Errorf("wireguard backend: %w", err)
	}
	for _, want := range wants {
		if !slices.Contains(have, want) {
			if err := nl.AddAddr(d.link.Index, want); err != nil {
				return fmt.Errorf("wireguard backend: %w", err)
			}
		}
	}
	for _, p := range have {
		if !slices.Contains(wants, p) && slices.ContainsFunc(d.nets, func(n netip.Prefix) bool { return n.Contains(p.Addr()) }) {
			if err := nl.DeleteAddr(d.link.Index, p); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
				return fmt.Errorf("wireguard backend: removing stale address: %w", err)
			}
		}
	}
	d.addrFor = own
	return nil
}

// Set implements backend.Backend: each family's device is brought to s.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	if err := b.Begin(ctx, s); err != nil {
		return err
	}
	var errs []error
	for _, d := range b.devices() {
		errs = append(errs, d.set(s))
	}
	return errors.Join(errs...)
}

func (d *device) set(s backend.State) error {
	own := d.owns(&s.Own)
	if !d.devOK.Load() || d.b.verify < 0 || time.Since(d.checkedAt) >= d.b.verify {
		if err := d.ensureDevice(); err != nil {
			return err
		}
		d.addrFor = [2]netip.Prefix{}
		d.checkedAt = time.Now()
		d.devOK.Store(true)
	}
	if d.addrFor != own {
		if err := d.ensureAddr(own); err != nil {
			d.devOK.Store(false)
			return err
		}
	}
	want, peerErrs := d.desired(s)

	// Peers first: the route leads into the device, whose allowed IPs
	// then route each packet.
	st, err := d.reconcilePeers(want)
	rst, rerr := d.prog.Sync(0, d.routes(d.link.Index))
	if st.set+st.removed+rst.Added+rst.Deleted > 0 || err != nil || rerr != nil || len(peerErrs) > 0 {
		d.log.Debug("reconciled", "device", d.name, "peers", len(want), "set", st.set, "removed", st.removed,
			"routes_added", rst.Added, "routes_deleted", rst.Deleted, "skipped", len(peerErrs))
	}
	return errors.Join(append(peerErrs, err, rerr)...)
}

// routes is the device's route to each network it carries, on link.
func (d *device) routes(link int) netlinkx.Entries {
	routes := netlinkx.NewEntries(len(d.nets))
	for _, n := range d.nets {
		routes.Routes[n] = netlinkx.Route{Dst: n, LinkIndex: link}
	}
	return routes
}

type peerStats struct{ set, removed int }

// reconcilePeers makes the device's peers equal want (sorted by key): it
// sets the missing and differing ones, then removes the others. A peer
// that roamed keeps the endpoint WireGuard learnt (roamed).
func (d *device) reconcilePeers(want []wg.Peer) (peerStats, error) {
	var st peerStats
	have, err := d.engine.Peers()
	if err != nil {
		return st, fmt.Errorf("wireguard backend: %s: %w", d.name, err)
	}
	set, remove := DiffPeers(have, want, time.Now(), d.advertised)
	st.set, st.removed = len(set), len(remove)
	if len(set)+len(remove) > 0 {
		if err := d.engine.Apply(set, remove); err != nil {
			// The record of what the leases advertised stays as it was: a
			// lease's new address that was not set is set next time.
			return st, fmt.Errorf("wireguard backend: %s: %w", d.name, err)
		}
	}
	// What each wanted peer's lease advertises, now held by the device.
	adv := make(map[wg.Key]netip.AddrPort, len(want))
	for _, p := range want {
		adv[p.PublicKey] = p.Endpoint
	}
	d.advertised = adv
	return st, nil
}

// roamGrace is how recent a peer's last handshake must be for the
// endpoint WireGuard learnt to be kept over the advertised one: a session
// lives 180 s at most without a new handshake (REJECT_AFTER_TIME), and a
// peer with traffic shakes hands again every 120 s.
const roamGrace = 3 * time.Minute

// roamed reports whether the device's peer h keeps its endpoint rather than
// want's. WireGuard moves a peer's endpoint only to the source address of
// an authenticated packet from it, so an endpoint other than the advertised
// one, with a handshake within roamGrace, is where the peer really is (a
// node behind NAT whose mapping changed); resetting it to the lease's
// address on each reconcile would cut that peer off until it shook hands
// again. This holds while the lease advertises what it did when the peer
// was last set (adv, by key; a key adv lacks counts as unchanged): a lease
// that moves its address is followed at once. Without a recent handshake,
// the advertised endpoint is set again (someone changed it by hand, or the
// peer went quiet).
func roamed(h, want wg.Peer, now time.Time, adv map[wg.Key]netip.AddrPort) bool {
	if h.Endpoint == want.Endpoint || !h.Endpoint.IsValid() || h.LastHandshake.IsZero() || now.Sub(h.LastHandshake) >= roamGrace {
		return false
	}
	a, known := adv[want.PublicKey]
	return !known || a == want.Endpoint
}

// DiffPeers returns the peers of want that have does not hold as wanted,
// and the keys of have's peers that want lacks. A peer that roamed (at now,
// with adv the endpoints last advertised, nil: none known) is wanted at
// the endpoint it holds.
func DiffPeers(have, want []wg.Peer, now time.Time, adv map[wg.Key]netip.AddrPort) (set []wg.Peer, remove []wg.Key) {
	cur := make(map[wg.Key]wg.Peer, len(have))
	for _, p := range have {
		cur[p.PublicKey] = p
	}
	wanted := make(map[wg.Key]bool, len(want))
	for _, p := range want {
		wanted[p.PublicKey] = true
		c, ok := cur[p.PublicKey]
		if ok && roamed(c, p, now, adv) {
			p.Endpoint = c.Endpoint
		}
		if !ok || !c.SameConfig(p) {
			set = append(set, p)
		}
	}
	for _, p := range have {
		if !wanted[p.PublicKey] {
			remove = append(remove, p.PublicKey)
		}
	}
	return set, remove
}

// The per-family views of a lease.
func (d *device) subnetOf(l *subnet.Lease) netip.Prefix { return l.FamilySubnet(d.six) }

func (d *device) publicIP(l *subnet.Lease) netip.Addr { return l.FamilyPublicIP(d.six) }

func (d *device) data(l *subnet.Lease) json.RawMessage { return l.FamilyBackendData(d.six) }

// desired computes the device's wanted peers from the peer set, sorted by
// key, and the reasons peers are skipped (in subnet order). The result
// does not depend on the order of s.Peers. On the IPv6 device of a
// dual-stack network, peers without an IPv6 subnet (nodes still IPv4-only)
// are left out without an error.
func (d *device) desired(s backend.State) ([]wg.Peer, []error) {
	if d.single {
		return d.desiredSingle(s)
	}
	b := d.b
	own := d.subnetOf(&s.Own)
	leaveOut := func(sn netip.Prefix) bool {
		return sn == own || d.six && !sn.IsValid() && b.Cfg.EnableIPv4
	}
	return d.collect(s, d.subnetOf, leaveOut, func(p *subnet.Lease, fail func(string, ...any)) (wg.Peer, bool) {
		sn, ip := d.subnetOf(p), d.publicIP(p)
		if d.six {
			switch {
			case !b.Cfg.ContainsIPv6(sn):
				fail("IPv6 subnet %v is not a /%d of IPv6 network %s", sn, b.Cfg.IPv6SubnetLen, b.Cfg.IPv6Network)
				return wg.Peer{}, false
			case !subnet.IsUsableUnicast6(ip):
				fail("PublicIPv6 %v is not a global unicast IPv6 address", ip)
				return wg.Peer{}, false
			}
		} else {
			switch {
			case !b.Cfg.Contains(sn):
				fail("subnet %v is not a /%d of network %s", sn, b.Cfg.SubnetLen, b.Cfg.Network)
				return wg.Peer{}, false
			case !ip.Is4() || !subnet.IsUsableUnicast(ip):
				fail("PublicIP is not a unicast IPv4 address")
				return wg.Peer{}, false
			}
		}
		if p.Attrs.BackendType != TypeName {
			fail("BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			return wg.Peer{}, false
		}
		pd, err := ParseBackendData(d.data(p))
		if err != nil {
			if d.six {
				fail("BackendV6Data: %v", err)
			} else {
				fail("%v", err)
			}
			return wg.Peer{}, false
		}
		port := b.opts.PeerPort(false, &pd, nil)
		if d.six {
			port = b.opts.PeerPort(true, nil, &pd)
		}
		return wg.Peer{
			PublicKey:    pd.PublicKey,
			PresharedKey: b.opts.PSK,
			Endpoint:     netip.AddrPortFrom(ip, uint16(port)),
			AllowedIPs:   []netip.Prefix{sn},
			Keepalive:    b.opts.Keepalive,
		}, true
	})
}

// collect is the frame of desired and desiredSingle. It walks s.Peers in
// the order of the subnet sub gives each (sorting a copy if need be, so
// that the result does not depend on their order), leaves out the leases
// whose subnet leaveOut names (the own one), skips every lease of a
// subnet that several hold, and asks build for the peer of each other
// lease, which calls fail with the reason when there is none. A peer
// advertising this node's own key, or a key that another peer advertises
// too, is skipped (neither holder can be trusted with a shared key, and
// skipping all keeps the result independent of the order of events).
// The peers come back sorted by key; the reasons, one per skipped lease,
// in subnet order.
func (d *device) collect(s backend.State, sub func(*subnet.Lease) netip.Prefix, leaveOut func(netip.Prefix) bool,
	build func(p *subnet.Lease, fail func(format string, args ...any)) (wg.Peer, bool)) ([]wg.Peer, []error) {
	b := d.b
	cmp := func(x, y subnet.Lease) int { return subnet.CompareSubnets(sub(&x), sub(&y)) }
	peers := s.Peers
	if !slices.IsSortedFunc(peers, cmp) {
		peers = slices.Clone(peers)
		slices.SortFunc(peers, cmp)
	}
	type cand struct {
		lease *subnet.Lease
		peer  wg.Peer
	}
	var cands []cand
	var errs []error
	byKey := map[wg.Key][]int{}
	for i := 0; i < len(peers); {
		j := i + 1
		for j < len(peers) && sub(&peers[j]) == sub(&peers[i]) {
			j++
		}
		group := peers[i:j]
		i = j
		p := &group[0]
		sn := sub(p)
		if leaveOut(sn) {
			continue
		}
		if len(group) > 1 {
			for k := range group {
				errs = append(errs, b.Skip(&group[k], "another peer holds subnet %s", sn))
			}
			continue
		}
		peer, ok := build(p, func(format string, args ...any) { errs = append(errs, b.Skip(p, format, args...)) })
		if !ok {
			continue
		}
		if peer.PublicKey == b.pub {
			errs = append(errs, b.Skip(p, "its PublicKey %s is this node's own", peer.PublicKey))
			continue
		}
		byKey[peer.PublicKey] = append(byKey[peer.PublicKey], len(cands))
		cands = append(cands, cand{lease: p, peer: peer})
	}
	want := make([]wg.Peer, 0, len(cands))
	for _, c := range cands {
		if idx := byKey[c.peer.PublicKey]; len(idx) > 1 {
			errs = append(errs, b.Skip(c.lease, "PublicKey %s is also advertised by %d other peers", c.peer.PublicKey, len(idx)-1))
			continue
		}
		want = append(want, c.peer)
	}
	wg.SortPeers(want)
	return want, errs
}
