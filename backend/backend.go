// Package backend defines the seam between the agent and the data plane: a
// Backend turns the desired state (this node's lease and the set of peer
// leases) into kernel state, declaratively. The registry in this package
// names every backend explicitly.
package backend

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// ExternalInterface is the node's underlay: the link and address that peers
// reach it on.
type ExternalInterface struct {
	// Name and Index identify the link (e.g. eth0).
	Name  string
	Index int
	// MTU is the link's MTU.
	MTU int
	// Addr is an IPv4 address of the link, used as the VXLAN source; the
	// zero Addr when IPv4 is off.
	Addr netip.Addr
	// PublicIP is the IPv4 address advertised to peers (Addr unless
	// -public-ip says otherwise); the zero Addr when IPv4 is off.
	PublicIP netip.Addr
	// Addr6 is a global IPv6 address of the link, the source of the IPv6
	// tunnel; the zero Addr when IPv6 is off.
	Addr6 netip.Addr
	// PublicIPv6 is the IPv6 address advertised to peers (Addr6 unless
	// -public-ipv6 says otherwise); the zero Addr when IPv6 is off.
	PublicIPv6 netip.Addr
}

// State is the whole desired state handed to a backend.
type State struct {
	// Own is this node's lease.
	Own subnet.Lease
	// Peers are the validated leases of the network, in any order. They may
	// include Own's subnet, which the backend skips. Set must not keep or
	// change the slice after it returns: the caller reuses it. The leases'
	// contents (their BackendData bytes included) are not modified once
	// handed to Set, by the caller or the backend, so a backend may keep
	// references to them rather than copies.
	Peers []subnet.Lease
	// Incremental says that Changed names every subnet whose leases in Peers
	// may differ from those in the previous Set's Peers (added, changed or
	// removed; a subnet may be named more than once), and that Peers is
	// sorted by primary subnet (subnet.CompareSubnets). A backend may
	// then derive entries for those subnets alone, so that a change costs
	// what it touches, not the whole peer set. When false the backend
	// compares every peer.
	Incremental bool
	Changed     []netip.Prefix
}

// Backend programs the kernel for one network. Set is declarative and
// idempotent: start-up, a peer event, a periodic resync and a self-heal all
// call Set with the whole desired state, and it changes only what differs.
type Backend interface {
	// Type returns the backend type as written in leases ("vxlan").
	Type() string
	// LeaseAttrs fills in BackendType and BackendData for this node's lease.
	// It describes the device as New left it (vxlan: the MAC the device
	// really has), so the agent calls it after New and before AcquireLease.
	LeaseAttrs(attrs *subnet.LeaseAttrs) error
	// MTU returns the MTU that pods should use (FLANNEL_MTU).
	MTU() int
	// Set makes the kernel match s, adding before deleting. It returns an
	// error describing what it could not reach; it has still applied what
	// it could (a bad peer never blocks the others).
	Set(ctx context.Context, s State) error
	// Changes returns a channel that receives a value whenever the kernel
	// state the backend owns may have been changed by someone else (netlink
	// events), so that the agent calls Set again. It may return nil.
	Changes() <-chan struct{}
	// Close releases the backend's goroutines and sockets. It leaves the
	// kernel state in place: restarting the agent must not drop traffic.
	Close() error
}

// EngineReporter is implemented by a backend with more than one
// implementation of its data plane (wireguard: "kernel" or "userspace").
// A backend without it programs the kernel directly ("kernel").
type EngineReporter interface {
	Engine() string
}

// EngineOf returns the engine of b: EngineReporter's answer, else "kernel".
func EngineOf(b Backend) string {
	if e, ok := b.(EngineReporter); ok {
		if s := e.Engine(); s != "" {
			return s
		}
	}
	return "kernel"
}

// Params is what every backend's constructor gets.
type Params struct {
	// Config is the network config; Config.Backend holds the backend's own
	// options as raw JSON.
	Config *subnet.Config
	// Ext is the node's underlay interface.
	Ext ExternalInterface
	// Previous, if not nil, returns this node's own lease as the store still
	// holds it from an earlier run (subnet.Manager.LookupLease), or nil when
	// there is none. A backend calls it at most once, in New, and only when
	// it must create its device afresh (after a reboot): it may then take
	// back the identity peers still hold entries for (vxlan: the VtepMAC in
	// BackendData), so that they need change nothing. A device that
	// survived (an agent restart, or flanneld's device on a node switching
	// to Weft) carries its identity itself.
	Previous func(ctx context.Context) (*subnet.Lease, error)
	Log      *slog.Logger
}

// Spec describes one backend for the registry.
type Spec struct {
	// New creates the backend (it may create devices, but programs no peers).
	New func(ctx context.Context, p Params) (Backend, error)
	// ValidateData checks a peer lease's BackendData; it must be pure and
	// cheap, as the control plane calls it for every lease it reads.
	ValidateData func(cfg *subnet.Config, data json.RawMessage) error
	// Plan, if not nil, reads the kernel of the current network namespace
	// and says what Set(s) would change there, changing nothing: the dry
	// run `weft doctor` reports from. It creates no device and keeps no
	// subscription.
	Plan func(ctx context.Context, p Params, s State) (Plan, error)
}

// Plan is what a backend's Set would change, found without changing
// anything.
type Plan struct {
	// Device lists what is wrong with the backend's device (missing, down,
	// configured otherwise than the network config says), one finding a
	// line; empty when the device is right or the backend has none.
	Device []string
	// Changes are the kernel entries Set would add, replace or delete.
	Changes []netlinkx.Change
	// Skipped are the peers Set would leave out, each with the reason (an
	// invalid lease, a subnet or VtepMAC claimed twice).
	Skipped []error
}
