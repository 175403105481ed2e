package wg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Client is the part of wgctrl's client the kernel engine uses (a seam for
// tests: *wgctrl.Client implements it).
type Client interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

var _ Engine = (*kernelEngine)(nil)

// kernelEngine configures a kernel WireGuard device through wgctrl.
type kernelEngine struct {
	name string
	c    Client
}

// newKernelEngine gives the kernel device d's key and port. It keeps the
// device's peers (ReplacePeers false): a restarted agent finds them
// programmed and changes only what differs.
func newKernelEngine(c Client, d Device) (*kernelEngine, error) {
	key, port := d.PrivateKey, d.ListenPort
	if err := c.ConfigureDevice(d.Name, wgtypes.Config{PrivateKey: &key, ListenPort: &port}); err != nil {
		return nil, fmt.Errorf("configuring WireGuard device %s (listen port %d): %w", d.Name, port, err)
	}
	return &kernelEngine{name: d.Name, c: c}, nil
}

// Kind implements Engine.
func (k *kernelEngine) Kind() Kind { return Kernel }

// Peers implements Engine.
func (k *kernelEngine) Peers() ([]Peer, error) {
	d, err := k.c.Device(k.name)
	if err != nil {
		return nil, fmt.Errorf("reading WireGuard device %s: %w", k.name, err)
	}
	out := make([]Peer, 0, len(d.Peers))
	for _, p := range d.Peers {
		q := Peer{PublicKey: p.PublicKey, PresharedKey: p.PresharedKey, Keepalive: p.PersistentKeepaliveInterval, LastHandshake: p.LastHandshakeTime}
		if p.Endpoint != nil {
			q.Endpoint = p.Endpoint.AddrPort()
			q.Endpoint = netip.AddrPortFrom(q.Endpoint.Addr().Unmap(), q.Endpoint.Port())
		}
		for _, a := range p.AllowedIPs {
			if pf, ok := prefixOf(a); ok {
				q.AllowedIPs = append(q.AllowedIPs, pf)
			}
		}
		q.AllowedIPs = sortedPrefixes(q.AllowedIPs)
		out = append(out, q)
	}
	SortPeers(out)
	return out, nil
}

// Apply implements Engine: one configuration call with the peers to set
// (each replacing its allowed IPs), then one removing the others. The
// kernel starts a handshake as soon as a peer has traffic or a keepalive.
func (k *kernelEngine) Apply(set []Peer, remove []Key) error {
	var errs []error
	if len(set) > 0 {
		cfg := wgtypes.Config{Peers: make([]wgtypes.PeerConfig, 0, len(set))}
		for _, p := range set {
			cfg.Peers = append(cfg.Peers, peerConfig(p))
		}
		if err := k.c.ConfigureDevice(k.name, cfg); err != nil {
			errs = append(errs, fmt.Errorf("WireGuard device %s: setting %d peers: %w", k.name, len(set), err))
		}
	}
	if len(remove) > 0 {
		cfg := wgtypes.Config{Peers: make([]wgtypes.PeerConfig, 0, len(remove))}
		for _, key := range remove {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: key, Remove: true})
		}
		if err := k.c.ConfigureDevice(k.name, cfg); err != nil {
			errs = append(errs, fmt.Errorf("WireGuard device %s: removing %d peers: %w", k.name, len(remove), err))
		}
	}
	return errors.Join(errs...)
}

// Close implements Engine: it closes the client and leaves the device.
func (k *kernelEngine) Close() error { return k.c.Close() }

// peerConfig converts a Peer for wgctrl.
func peerConfig(p Peer) wgtypes.PeerConfig {
	psk := p.PresharedKey
	ka := p.Keepalive.Truncate(time.Second)
	pc := wgtypes.PeerConfig{
		PublicKey:                   p.PublicKey,
		PresharedKey:                &psk,
		PersistentKeepaliveInterval: &ka,
		ReplaceAllowedIPs:           true,
	}
	if p.Endpoint.IsValid() {
		pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
	}
	for _, a := range p.AllowedIPs {
		pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
	}
	return pc
}

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
