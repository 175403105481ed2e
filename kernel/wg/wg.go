// Package wg is the WireGuard seam of the data plane: one device, its own
// key and port, and its peers, behind an Engine with two implementations.
//
//   - The kernel engine drives the kernel's WireGuard: a link of type
//     "wireguard" made over netlink and configured through wgctrl's
//     generic netlink client. The device and its peers live in the kernel
//     and outlive the agent.
//   - The userspace engine runs wireguard-go inside the agent on a TUN
//     device. The TUN is made persistent (TUNSETPERSIST), so that the link,
//     its addresses and routes outlive the agent and a restarted agent
//     re-opens it; the peers live in the process and are configured again
//     at start, when the engine also starts a handshake to each of them.
//
// Open chooses: an existing device keeps its engine, otherwise the kernel's
// where `ip link add type wireguard` works, else userspace; a Choice can
// force one. Every kernel call of the WireGuard backend (netlink, TUN
// ioctls, generic netlink) lives here; the backend computes desired peers
// and diffs them against Engine.Peers.
package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key is a Curve25519 key (private, public or preshared), as wgctrl's.
type Key = wgtypes.Key

// Kind names an engine.
type Kind string

// The engines.
const (
	// Kernel is the kernel's WireGuard, configured through wgctrl.
	Kernel Kind = "kernel"
	// Userspace is wireguard-go on a persistent TUN device, in-process.
	Userspace Kind = "userspace"
)

// Choice is what the configuration asks for: Auto, or one engine.
type Choice string

// The choices.
const (
	// Auto keeps the engine of an existing device, else takes the kernel's
	// where it can make a wireguard link, else userspace.
	Auto Choice = "auto"
	// ForceKernel fails where the kernel has no WireGuard.
	ForceKernel Choice = "kernel"
	// ForceUserspace always runs wireguard-go.
	ForceUserspace Choice = "userspace"
)

// ParseChoice parses "auto", "kernel" or "userspace" (case-insensitive; ""
// is Auto).
func ParseChoice(s string) (Choice, error) {
	switch c := Choice(strings.ToLower(s)); c {
	case "":
		return Auto, nil
	case Auto, ForceKernel, ForceUserspace:
		return c, nil
	}
	return "", fmt.Errorf("WireGuard engine %q: want \"auto\", \"kernel\" or \"userspace\"", s)
}

// ErrNoKernelWireGuard is wrapped by Open's error when the kernel engine was
// asked for and the kernel cannot make a wireguard link.
var ErrNoKernelWireGuard = errors.New("the kernel has no WireGuard (ip link add type wireguard fails)")

// Device is a device's own settings.
type Device struct {
	// Name is the link name, e.g. flannel-wg.
	Name string
	// PrivateKey is the device's private key.
	PrivateKey Key
	// ListenPort is the UDP port the device listens on.
	ListenPort int
	// MTU is the link's MTU.
	MTU int
}

// Peer is one peer of a device.
type Peer struct {
	PublicKey Key
	// PresharedKey is the zero Key when none is configured.
	PresharedKey Key
	// Endpoint is where packets to the peer go (invalid: none).
	Endpoint netip.AddrPort
	// AllowedIPs are the addresses routed to (and accepted from) the peer,
	// sorted.
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval (0: off).
	Keepalive time.Duration
	// LastHandshake is when the last handshake completed (zero: never).
	// Peers reports it; Apply ignores it.
	LastHandshake time.Time
}

// SameConfig reports whether p and q configure a peer the same way
// (LastHandshake aside; AllowedIPs compared as sets).
func (p Peer) SameConfig(q Peer) bool {
	return p.PublicKey == q.PublicKey && p.PresharedKey == q.PresharedKey && p.Endpoint == q.Endpoint &&
		p.Keepalive == q.Keepalive && slices.Equal(sortedPrefixes(p.AllowedIPs), sortedPrefixes(q.AllowedIPs))
}

// String formats the peer like one line of `wg show`.
func (p Peer) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "peer %s endpoint %v allowed-ips ", p.PublicKey, p.Endpoint)
	for i, a := range sortedPrefixes(p.AllowedIPs) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(a.String())
	}
	if p.Keepalive > 0 {
		fmt.Fprintf(&b, " keepalive %ds", int(p.Keepalive/time.Second))
	}
	if p.PresharedKey != (Key{}) {
		b.WriteString(" psk")
	}
	return b.String()
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, ComparePrefix)
	return slices.Compact(out)
}

// ComparePrefix orders prefixes by address, then length.
func ComparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// Engine configures one WireGuard device. Its methods may be called from
// one goroutine at a time.
type Engine interface {
	// Kind says which engine this is.
	Kind() Kind
	// Peers returns the device's current peers, sorted by public key.
	Peers() ([]Peer, error)
	// Apply adds or updates the peers in set (each one's allowed IPs
	// replace those it had), then removes the peers in remove. It applies
	// what it can and reports what failed. The userspace engine starts a
	// handshake to every peer it adds (after a restart that is every peer),
	// so that the peers switch to its new sessions at once; the kernel
	// engine's peers outlive the agent, and it handshakes on first traffic.
	Apply(set []Peer, remove []Key) error
	// Close releases the engine. The kernel engine leaves the device and
	// its peers in place; the userspace one stops wireguard-go (the peers
	// go with the process) and leaves the persistent TUN, its addresses and
	// routes in place.
	Close() error
}

// SortPeers sorts peers by public key, the order Peers returns.
func SortPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(string(a.PublicKey[:]), string(b.PublicKey[:])) })
}
