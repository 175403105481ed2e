package subnet

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrNoFreeSubnet is wrapped by the error AcquireLease returns when every
// subnet in [SubnetMin, SubnetMax] is held by a lease or a reservation.
var ErrNoFreeSubnet = errors.New("no free subnet")

// Manager is the seam between the agent and the store that holds the
// leases (etcd today). It knows nothing of the kernel.
type Manager interface {
	// GetNetworkConfig returns the network config. While the config key is
	// missing or invalid it waits, retrying with backoff and logging once per
	// change, until one appears or ctx ends.
	GetNetworkConfig(ctx context.Context) (*Config, error)

	// WatchConfig calls onChange, from one goroutine, whenever the stored
	// config differs from cfg (or is deleted: onChange(nil, err)), until ctx
	// ends. The agent reports such changes; it does not apply them live.
	WatchConfig(ctx context.Context, cfg *Config, onChange func(*Config, error)) error

	// AcquireLease leases a subnet for a node with the given attributes and
	// returns it, with a subnet of each family the config has on. It takes
	// back the node's previous subnet when it can: the one held under the
	// same PublicIP (PublicIPv6 in an IPv6-only network), a reservation for
	// it, or opts.Hint and opts.HintIPv6 (e.g. from the previous
	// subnet.env) when free. A lease taken back keeps its IPv4 subnet when
	// the config gained or lost IPv6.
	AcquireLease(ctx context.Context, cfg *Config, attrs LeaseAttrs, opts AcquireOptions) (*Lease, error)

	// LookupLease returns the lease the store still holds for this node from
	// an earlier run, as AcquireLease would take it back, without taking or
	// changing it; nil (and no error) when there is none. In etcd the node is
	// its PublicIP (its PublicIPv6 in an IPv6-only network): the leased key
	// holding publicIP, else a reservation for it. A store that knows the node otherwise (Kubernetes: by its Node
	// name, the lease being the Node's podCIDR and annotations, whose
	// backend-data is flanneld's and Weft's BackendData) may ignore
	// publicIP. The agent offers it to the backend before the first
	// AcquireLease, so that a backend that must create its device afresh
	// (after a reboot) can advertise what the node advertised before (the
	// vxlan VtepMAC) and peers need change nothing.
	LookupLease(ctx context.Context, cfg *Config, publicIP netip.Addr) (*Lease, error)

	// KeepLease keeps lease alive until ctx ends: it refreshes its etcd lease
	// when less than renewMargin of the TTL is left, and when the lease is
	// lost (revoked, expired, key deleted) it acquires again, preferring the
	// same subnet, and calls onChange with the new lease. It returns ctx's
	// error; it does not release the lease.
	KeepLease(ctx context.Context, cfg *Config, lease *Lease, renewMargin time.Duration, onChange func(*Lease)) error

	// WatchLeases calls fn, from one goroutine, with batches of validated
	// lease events until ctx ends: first the current leases as EventAdded,
	// then every change. Invalid leases are logged and never reach fn (a
	// lease that turns invalid is reported as EventRemoved). It survives
	// etcd restarts and compaction without losing or repeating events.
	WatchLeases(ctx context.Context, cfg *Config, fn func([]Event)) error

	// ReleaseLease deletes the lease for subnet, if it is still held under
	// the given etcd lease (used by an explicit node teardown only).
	ReleaseLease(ctx context.Context, lease *Lease) error
}

// AcquireOptions tunes AcquireLease.
type AcquireOptions struct {
	// Hint is an IPv4 subnet to prefer when it is free (from subnet.env).
	Hint netip.Prefix
	// HintIPv6 is an IPv6 subnet to prefer when it is free.
	HintIPv6 netip.Prefix
	// TTL is the etcd lease's time to live; 0 means the store's default (24 h).
	TTL time.Duration
}
