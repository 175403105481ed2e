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
	opts   Options
	host   Host
	open   func(wg.Device, wg.Options) (wg.Engine, error)
	key    wgtypes.Key
	pub    wgtypes.Key
	mtu    int
	verify time.Duration

	// Guarded by SetMu.
	engine    wg.Engine
	link      netlinkx.Link
	addrFor   netip.Prefix
	checkedAt time.Time

	kind      atomic.Value // wg.Kind
	devOK     atomic.Bool
	linkIndex atomic.Int64
}

// New creates the backend: it parses the options, loads or makes the
// private key, opens the engine (creating or adopting flannel-wg) and
// starts watching netlink. It programs no peers; call Set.
func New(ctx context.Context, p backend.Params, c Config) (*Backend, error) {
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return nil, err
	}
	if err := ipv4Only(p.Config); err != nil {
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
	if b.mtu, err = deviceMTU(opts, p); err != nil {
		return nil, err
	}
	key, created, err := LoadOrCreateKey(c.Host.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("wireguard backend: %w", err)
	}
	b.key, b.pub = key, key.PublicKey()
	b.Base, err = base.New(ctx, p, base.Options{Netlink: c.Netlink, VerifyEvery: c.VerifyEvery},
		base.Kind{Name: TypeName, Device: DeviceName, DefaultVerify: DefaultVerifyEvery, Owns: b.ownsRoute})
	if err != nil {
		return nil, err
	}
	if created {
		b.Log.Info("made a WireGuard private key", "key_file", c.Host.KeyFile, "public_key", b.pub.String())
	} else {
		b.Log.Info("using the WireGuard private key", "key_file", c.Host.KeyFile, "public_key", b.pub.String())
	}
	if err := b.openEngine(); err != nil {
		b.Base.Close()
		return nil, err
	}
	if err := b.ensureDevice(); err != nil {
		b.engine.Close()
		b.Base.Close()
		return nil, err
	}
	b.Follow(b.observe, b.Resync)
	return b, nil
}

// ErrIPv6 is wrapped by the error for a network config with IPv6 on, which
// this version's wireguard backend does not carry yet.
var ErrIPv6 = errors.New("the wireguard backend carries IPv4 only in this version")

// ipv4Only refuses a config with IPv6 on (dual-stack or IPv6-only), rather
// than carry its IPv4 half and silently drop the pods' IPv6 traffic.
func ipv4Only(cfg *subnet.Config) error {
	if cfg.EnableIPv6 || !cfg.EnableIPv4 {
		return fmt.Errorf("wireguard backend: %w: the network config has EnableIPv6 %v and EnableIPv4 %v; set EnableIPv6 to false (and EnableIPv4 to true), or use vxlan or host-gw for IPv6", ErrIPv6, cfg.EnableIPv6, cfg.EnableIPv4)
	}
	return nil
}

// deviceMTU is the underlay's MTU (the option, else the external
// interface's) minus the overhead of the endpoints' family.
func deviceMTU(opts Options, p backend.Params) (int, error) {
	underlay := opts.MTU
	if underlay == 0 {
		underlay = p.Ext.MTU
	}
	overhead := OverheadIPv4
	if opts.Mode == ModeIPv6 || (opts.Mode == ModeAuto && p.Config.EnableIPv6) {
		overhead = OverheadIPv6
	}
	mtu := underlay - overhead
	if mtu < 576 {
		return 0, fmt.Errorf("wireguard backend: device MTU %d (underlay MTU %d minus %d) is too small", mtu, underlay, overhead)
	}
	return mtu, nil
}

// openEngine opens the engine on flannel-wg. Must hold setMu or be in New.
func (b *Backend) openEngine() error {
	sock := b.host.SocketDir
	if sock == "-" {
		sock = ""
	}
	e, err := b.open(wg.Device{Name: DeviceName, PrivateKey: b.key, ListenPort: b.opts.ListenPort, MTU: b.mtu},
		wg.Options{Choice: b.opts.Engine, SocketDir: sock, Log: b.Log})
	if err != nil {
		return fmt.Errorf("wireguard backend: %w", err)
	}
	b.engine = e
	b.kind.Store(e.Kind())
	b.Log.Info("WireGuard engine", "engine", string(e.Kind()), "choice", string(b.opts.Engine),
		"listen_port", b.opts.ListenPort, "mtu", b.mtu, "public_key", b.pub.String())
	return nil
}

// MTU implements backend.Backend: the device's MTU.
func (b *Backend) MTU() int { return b.mtu }

// Engine returns the engine in use, "kernel" or "userspace".
func (b *Backend) Engine() string {
	k, _ := b.kind.Load().(wg.Kind)
	return string(k)
}

// PublicKey returns this node's public key, as advertised in the lease.
func (b *Backend) PublicKey() wgtypes.Key { return b.pub }

// LeaseAttrs implements backend.Backend: BackendType "wireguard",
// BackendData {"PublicKey":…,"Port":ListenPort,"Engine":…}, and with IPv6
// BackendV6Data with the port IPv6 traffic is received on.
func (b *Backend) LeaseAttrs(attrs *subnet.LeaseAttrs) error {
	d := BackendData{PublicKey: b.pub.String(), Port: b.opts.ListenPort, Engine: b.Engine()}
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding wireguard backend data: %w", err)
	}
	attrs.BackendType = TypeName
	attrs.BackendData = data
	attrs.BackendV6Data = nil
	if b.Cfg.EnableIPv6 {
		d.Port = b.opts.AdvertisedV6Port()
		if attrs.BackendV6Data, err = json.Marshal(d); err != nil {
			return fmt.Errorf("encoding wireguard backend data: %w", err)
		}
	}
	return nil
}

// Resync makes the next Set check the device and read the kernel's routes.
func (b *Backend) Resync() {
	b.devOK.Store(false)
	b.Prog.Invalidate()
}

// Close implements backend.Backend: it stops watching netlink and closes
// the engine, leaving the device, its address and route in place (and the
// kernel engine's peers).
func (b *Backend) Close() error {
	b.Base.Close()
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	return b.engine.Close()
}

func (b *Backend) observe(u netlinkx.Update) {
	if u.Kind == netlinkx.LinkUpdate {
		l := u.Link
		ours := l.Name == DeviceName || (l.Index != 0 && int64(l.Index) == b.linkIndex.Load())
		if ours && (u.Deleted || !l.Up || l.MTU != b.mtu) {
			b.Resync()
			b.Sess.Notify()
		}
		return
	}
	if u.Kind == netlinkx.LostUpdates {
		b.Log.Warn("netlink updates lost; the next Set reads the kernel state", "err", u.Err)
	}
	if b.Prog.Observe(u) {
		b.Sess.Notify()
	}
}

// ownsRoute: the route to the whole network on the device (the link the
// programmer is given is 0: it owns no neighbours or FDB entries).
func (b *Backend) ownsRoute(r netlinkx.Route, _ int) bool {
	return r.Dst == b.Cfg.Network && !r.Gw.IsValid() && int64(r.LinkIndex) == b.linkIndex.Load()
}

// ensureDevice checks that flannel-wg exists (opening the engine again if
// someone deleted it), with the MTU, up. Must hold setMu or be in New.
func (b *Backend) ensureDevice() error {
	l, err := b.NL.LinkByName(DeviceName)
	if errors.Is(err, netlinkx.ErrNotFound) {
		b.Log.Warn("the WireGuard device is gone; making it again")
		if cerr := b.engine.Close(); cerr != nil {
			b.Log.Warn("closing the engine of the lost device", "err", cerr)
		}
		if err := b.openEngine(); err != nil {
			return err
		}
		l, err = b.NL.LinkByName(DeviceName)
	}
	if err != nil {
		return fmt.Errorf("wireguard backend: %w", err)
	}
	if l.MTU != b.mtu {
		if err := b.NL.SetLinkMTU(l.Index, b.mtu); err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
	}
	if !l.Up {
		if err := b.NL.SetLinkUp(l.Index); err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
	}
	if l.Index != b.link.Index {
		b.addrFor = netip.Prefix{}
		b.Prog.Invalidate()
	}
	b.link = l
	b.linkIndex.Store(int64(l.Index))
	return nil
}

// ensureAddr gives the device <own subnet>.0/32 and removes its other
// IPv4 addresses inside the network (from older leases), as flanneld.
func (b *Backend) ensureAddr(own netip.Prefix) error {
	want := netip.PrefixFrom(own.Addr(), 32)
	have, err := b.NL.Addrs(b.link.Index)
	if err != nil {
		return fmt.Errorf("wireguard backend: %w", err)
	}
	if !slices.Contains(have, want) {
		if err := b.NL.AddAddr(b.link.Index, want); err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
	}
	for _, p := range have {
		if p != want && p.Addr().Is4() && b.Cfg.Network.Contains(p.Addr()) {
			if err := b.NL.DeleteAddr(b.link.Index, p); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
				return fmt.Errorf("wireguard backend: removing stale address: %w", err)
			}
		}
	}
	b.addrFor = own
	return nil
}

// Set implements backend.Backend.
func (b *Backend) Set(ctx context.Context, s backend.State) error {
	b.SetMu.Lock()
	defer b.SetMu.Unlock()
	if err := b.Begin(ctx, s); err != nil {
		return err
	}
	own := s.Own.Subnet
	if !b.devOK.Load() || b.verify < 0 || time.Since(b.checkedAt) >= b.verify {
		if err := b.ensureDevice(); err != nil {
			return err
		}
		b.addrFor = netip.Prefix{}
		b.checkedAt = time.Now()
		b.devOK.Store(true)
	}
	if b.addrFor != own {
		if err := b.ensureAddr(own); err != nil {
			b.devOK.Store(false)
			return err
		}
	}
	want, peerErrs := b.desired(s)

	// Peers first: the route leads into the device, whose allowed IPs
	// then route each packet.
	st, err := b.reconcilePeers(want)
	routes := netlinkx.NewEntries(1)
	routes.Routes[b.Cfg.Network] = netlinkx.Route{Dst: b.Cfg.Network, LinkIndex: b.link.Index}
	rst, rerr := b.Prog.Sync(0, routes)
	if st.set+st.removed+rst.Added+rst.Deleted > 0 || err != nil || rerr != nil || len(peerErrs) > 0 {
		b.Log.Debug("reconciled", "peers", len(want), "set", st.set, "removed", st.removed,
			"routes_added", rst.Added, "routes_deleted", rst.Deleted, "skipped", len(peerErrs))
	}
	return errors.Join(append(peerErrs, err, rerr)...)
}

type peerStats struct{ set, removed int }

// reconcilePeers makes the device's peers equal want (sorted by key): it
// sets the missing and differing ones, then removes the others.
func (b *Backend) reconcilePeers(want []wg.Peer) (peerStats, error) {
	var st peerStats
	have, err := b.engine.Peers()
	if err != nil {
		return st, fmt.Errorf("wireguard backend: %w", err)
	}
	set, remove := DiffPeers(have, want)
	st.set, st.removed = len(set), len(remove)
	if len(set)+len(remove) == 0 {
		return st, nil
	}
	if err := b.engine.Apply(set, remove); err != nil {
		return st, fmt.Errorf("wireguard backend: %w", err)
	}
	return st, nil
}

// DiffPeers returns the peers of want that have does not hold as wanted,
// and the keys of have's peers that want lacks.
func DiffPeers(have, want []wg.Peer) (set []wg.Peer, remove []wg.Key) {
	cur := make(map[wg.Key]wg.Peer, len(have))
	for _, p := range have {
		cur[p.PublicKey] = p
	}
	wanted := make(map[wg.Key]bool, len(want))
	for _, p := range want {
		wanted[p.PublicKey] = true
		if c, ok := cur[p.PublicKey]; !ok || !c.SameConfig(p) {
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

// desired computes the wanted peers from the peer set, sorted by key, and
// the reasons peers are skipped (in subnet order). The result does not
// depend on the order of s.Peers.
func (b *Backend) desired(s backend.State) ([]wg.Peer, []error) {
	peers := s.Peers
	if !slices.IsSortedFunc(peers, compareLease) {
		peers = slices.Clone(peers)
		slices.SortFunc(peers, compareLease)
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
		for j < len(peers) && peers[j].Subnet == peers[i].Subnet {
			j++
		}
		group := peers[i:j]
		i = j
		p := &group[0]
		if p.Subnet == s.Own.Subnet {
			continue
		}
		fail := func(p *subnet.Lease, format string, args ...any) {
			errs = append(errs, b.Skip(p, format, args...))
		}
		if len(group) > 1 {
			for k := range group {
				fail(&group[k], "another peer holds subnet %s", p.Subnet)
			}
			continue
		}
		ip := p.Attrs.PublicIP
		switch {
		case !b.Cfg.Contains(p.Subnet):
			fail(p, "subnet %v is not a /%d of network %s", p.Subnet, b.Cfg.SubnetLen, b.Cfg.Network)
			continue
		case !ip.Is4() || !subnet.IsUsableUnicast(ip):
			fail(p, "PublicIP is not a unicast IPv4 address")
			continue
		case p.Attrs.BackendType != TypeName:
			fail(p, "BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			continue
		}
		d, err := ParseBackendData(p.Attrs.BackendData)
		if err != nil {
			fail(p, "%v", err)
			continue
		}
		if d.PublicKey == b.pub {
			fail(p, "its PublicKey %s is this node's own", d.PublicKey)
			continue
		}
		peer := wg.Peer{
			PublicKey:    d.PublicKey,
			PresharedKey: b.opts.PSK,
			Endpoint:     netip.AddrPortFrom(ip, uint16(b.opts.PeerPort(false, &d, nil))),
			AllowedIPs:   []netip.Prefix{p.Subnet},
			Keepalive:    b.opts.Keepalive,
		}
		byKey[d.PublicKey] = append(byKey[d.PublicKey], len(cands))
		cands = append(cands, cand{lease: p, peer: peer})
	}
	want := make([]wg.Peer, 0, len(cands))
	for _, c := range cands {
		if idx := byKey[c.peer.PublicKey]; len(idx) > 1 {
			// Neither holder can be trusted with the key; skipping all
			// keeps the result independent of the order of events.
			errs = append(errs, b.Skip(c.lease, "PublicKey %s is also advertised by %d other peers", c.peer.PublicKey, len(idx)-1))
			continue
		}
		want = append(want, c.peer)
	}
	wg.SortPeers(want)
	return want, errs
}

func compareLease(x, y subnet.Lease) int { return wg.ComparePrefix(x.Subnet, y.Subnet) }
