package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// maxAcquireRounds bounds how many fresh listings one AcquireLease makes
// when it keeps losing races.
const maxAcquireRounds = 10

// enumerateLimit is the largest range whose free subnets are listed in full
// to pick one uniformly; larger ranges are probed at random (listing 65,536
// subnets costs tens of milliseconds).
const enumerateLimit = 4096

// snapshot is what one Get of the subnets prefix tells the allocator.
type snapshot struct {
	rev int64
	// taken holds every subnet named by a key (whatever its value).
	taken map[netip.Prefix]bool
	// odd holds subnets named by keys of another length, which block every
	// subnet they overlap.
	odd []netip.Prefix
	// own is the leased key holding this node's PublicIP, reserved the
	// reservation for it.
	own, reserved *mvccpb.KeyValue
	ownAttrs      subnet.LeaseAttrs
	resAttrs      subnet.LeaseAttrs
	// leases and reservations count the keys inside the allocation range.
	leases, reservations int
}

func (sn *snapshot) free(p netip.Prefix) bool {
	if sn.taken[p] {
		return false
	}
	for _, o := range sn.odd {
		if o.Overlaps(p) {
			return false
		}
	}
	return true
}

// list reads the subnets prefix once and classifies every key.
func (s *Store) list(ctx context.Context, cfg *subnet.Config, ip netip.Addr) (*snapshot, error) {
	start := time.Now()
	resp, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return nil, fmt.Errorf("listing leases under %s: %w", s.subnets, err)
	}
	r := cfg.Subnets()
	ipQuoted := []byte(`"` + ip.String() + `"`)
	sn := &snapshot{rev: resp.Header.Revision, taken: make(map[netip.Prefix]bool, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		v4, _, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
		if err != nil || !v4.IsValid() {
			continue
		}
		if v4.Bits() == cfg.SubnetLen {
			sn.taken[v4] = true
		} else if v4.Overlaps(cfg.Network) {
			sn.odd = append(sn.odd, v4)
		}
		if r.Contains(v4) {
			if kv.Lease == 0 {
				sn.reservations++
			} else {
				sn.leases++
			}
		}
		if !cfg.Contains(v4) {
			continue
		}
		// Decoding every value costs more than the Get itself with many
		// leases: only decode those that can name this PublicIP.
		if !bytes.Contains(kv.Value, ipQuoted) {
			continue
		}
		attrs, err := subnet.ParseLeaseAttrs(kv.Value)
		if err != nil || attrs.PublicIP != ip {
			continue
		}
		if kv.Lease == 0 {
			if sn.reserved == nil {
				sn.reserved, sn.resAttrs = kv, attrs
			}
		} else if sn.own == nil || kv.ModRevision > sn.own.ModRevision {
			sn.own, sn.ownAttrs = kv, attrs
		}
	}
	return sn, nil
}

// AcquireLease leases a subnet for a node advertising attrs. In order of
// preference it takes: the leased key already holding attrs.PublicIP (kept
// bound to its live etcd lease, or rebound to a new one), a reservation for
// that PublicIP (used as is), opts.Hint when free, or a random free subnet in
// [SubnetMin, SubnetMax]. Creation is a create-if-absent transaction, so two
// nodes never hold one subnet. It returns an error wrapping ErrNoFreeSubnet
// when the range is full.
func (s *Store) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, opts subnet.AcquireOptions) (*subnet.Lease, error) {
	if !attrs.PublicIP.IsValid() {
		return nil, fmt.Errorf("acquiring a lease: attributes have no PublicIP")
	}
	val, err := attrs.Marshal()
	if err != nil {
		return nil, err
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = s.ttl
	}
	a := &acquirer{s: s, ttl: ttl}
	defer a.release()

	for round := 0; round < maxAcquireRounds; round++ {
		sn, err := s.list(ctx, cfg, attrs.PublicIP)
		if err != nil {
			return nil, err
		}
		if sn.own != nil {
			l, err := a.reuse(ctx, sn.own, attrs, val)
			if err != nil || l != nil {
				return l, err
			}
			continue // the key changed under us: look again
		}
		if sn.reserved != nil {
			return s.useReservation(ctx, sn.reserved, sn.resAttrs, attrs)
		}
		r := cfg.Subnets()
		if opts.Hint.IsValid() && r.Contains(opts.Hint) && sn.free(opts.Hint) {
			l, err := a.create(ctx, opts.Hint, attrs, val)
			if err != nil || l != nil {
				return l, err
			}
			sn.taken[opts.Hint] = true
			a.lost++
		}
		// Try free subnets from this listing until one sticks; each lost
		// race marks that subnet taken.
		for {
			p, ok := pickFree(r, sn)
			if !ok {
				break
			}
			l, err := a.create(ctx, p, attrs, val)
			if err != nil || l != nil {
				return l, err
			}
			sn.taken[p] = true
			a.lost++
		}
		if a.lost == 0 || round == maxAcquireRounds-1 {
			return nil, exhausted(cfg, sn)
		}
		// We lost races on a listing that may be stale in the other
		// direction too (keys deleted since): confirm with a fresh one.
		a.lost = 0
	}
	return nil, fmt.Errorf("acquiring a lease in %s: gave up after %d rounds of lost races", cfg.Network, maxAcquireRounds)
}

// LookupLease implements subnet.Manager: with one Get, the key AcquireLease
// would take back for publicIP (the newest leased key holding it, else a
// reservation for it), or nil when there is none. Only keys of the network
// (cfg) count, as for AcquireLease.
func (s *Store) LookupLease(ctx context.Context, cfg *subnet.Config, publicIP netip.Addr) (*subnet.Lease, error) {
	if !publicIP.IsValid() {
		return nil, fmt.Errorf("looking up this node's lease: no PublicIP")
	}
	sn, err := s.list(ctx, cfg, publicIP)
	if err != nil {
		return nil, err
	}
	kv, attrs := sn.own, sn.ownAttrs
	if kv == nil {
		kv, attrs = sn.reserved, sn.resAttrs
	}
	if kv == nil {
		return nil, nil
	}
	v4, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
	if err != nil {
		return nil, fmt.Errorf("looking up this node's lease: %w", err)
	}
	return &subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, EtcdLease: kv.Lease, ModRevision: kv.ModRevision}, nil
}

func exhausted(cfg *subnet.Config, sn *snapshot) error {
	r := cfg.Subnets()
	return fmt.Errorf("%w: network %s with SubnetLen %d has %d subnets in [%s, %s], held by %d leases and %d reservations",
		subnet.ErrNoFreeSubnet, cfg.Network, cfg.SubnetLen, r.Count(), r.Min, r.Max, sn.leases, sn.reservations)
}

// pickFree returns a free subnet of r chosen at random, so that racing nodes
// rarely collide.
func pickFree(r subnet.SubnetRange, sn *snapshot) (netip.Prefix, bool) {
	n := r.Count()
	if n == 0 {
		return netip.Prefix{}, false
	}
	if n <= enumerateLimit {
		var free []netip.Prefix
		for p := range r.All {
			if sn.free(p) {
				free = append(free, p)
			}
		}
		if len(free) == 0 {
			return netip.Prefix{}, false
		}
		return free[rand.IntN(len(free))], true
	}
	for range 1000 {
		p := r.At(rand.Uint64N(n))
		if sn.free(p) {
			return p, true
		}
	}
	// Nearly full: scan from a random start.
	start := rand.Uint64N(n)
	for i := uint64(0); i < n; i++ {
		if p := r.At((start + i) % n); sn.free(p) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (s *Store) useReservation(ctx context.Context, kv *mvccpb.KeyValue, stored, want subnet.LeaseAttrs) (*subnet.Lease, error) {
	v4, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
	if err != nil {
		return nil, fmt.Errorf("using reservation %q: %w", kv.Key, err)
	}
	l := &subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: stored, ModRevision: kv.ModRevision}
	if stored.Equal(want) {
		return l, nil
	}
	// An operator reserves a subnet for an address; the node fills in what
	// its backend advertises (e.g. the VtepMAC), and the key stays without
	// an etcd lease, so it never expires.
	val, err := want.Marshal()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
			clientv3.Compare(clientv3.LeaseValue(string(kv.Key)), "=", clientv3.NoLease)).
		Then(clientv3.OpPut(string(kv.Key), string(val))).
		Commit()
	s.track("txn", start)
	if err != nil {
		return nil, fmt.Errorf("updating reservation %s with this node's attributes: %w", kv.Key, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("reservation %s changed while this node was taking it; try again", kv.Key)
	}
	s.log.Info("took a reservation and wrote this node's attributes into it", "key", string(kv.Key), "was", string(kv.Value), "now", string(val))
	l.Attrs = want
	l.ModRevision = resp.Header.Revision
	return l, nil
}

// acquirer holds the etcd lease granted for one AcquireLease call, reused
// across lost races and revoked if unused.
type acquirer struct {
	s     *Store
	ttl   time.Duration
	id    clientv3.LeaseID
	used  bool
	lost  int
	grant time.Time
}

func (a *acquirer) leaseID(ctx context.Context) (clientv3.LeaseID, error) {
	if a.id != 0 {
		return a.id, nil
	}
	secs := int64((a.ttl + time.Second - 1) / time.Second)
	start := time.Now()
	resp, err := a.s.cli.Grant(ctx, secs)
	a.s.track("grant", start)
	if err != nil {
		return 0, fmt.Errorf("granting an etcd lease of %v: %w", a.ttl, err)
	}
	a.id, a.grant = resp.ID, start
	return a.id, nil
}

// release revokes the granted etcd lease if no key was bound to it.
func (a *acquirer) release() {
	if a.id == 0 || a.used {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.s.cli.Revoke(ctx, a.id)
	a.s.track("revoke", start)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		a.s.log.Debug("revoking an unused etcd lease", "lease", int64(a.id), "err", err)
	}
}

// create tries to create the key for p. It returns (nil, nil) when another
// node holds p.
func (a *acquirer) create(ctx context.Context, p netip.Prefix, attrs subnet.LeaseAttrs, val []byte) (*subnet.Lease, error) {
	id, err := a.leaseID(ctx)
	if err != nil {
		return nil, err
	}
	key := a.s.subnets + subnet.SubnetKey(p, netip.Prefix{})
	start := time.Now()
	resp, err := a.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(id))).
		Commit()
	a.s.track("txn", start)
	if err != nil {
		return nil, fmt.Errorf("creating lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, nil
	}
	a.used = true
	a.s.log.Info("leased a subnet", "subnet", p, "key", key, "ttl", a.ttl, "public_ip", attrs.PublicIP)
	return &subnet.Lease{Subnet: p, Attrs: attrs, EtcdLease: int64(id),
		Expiration: a.grant.Add(a.ttl), ModRevision: resp.Header.Revision}, nil
}

// reuse takes back this node's existing leased key. If its etcd lease is
// alive it is refreshed and kept; otherwise the key is rebound to a new etcd
// lease. The value is rewritten when attrs changed (e.g. a new VtepMAC). It
// returns (nil, nil) when the key changed meanwhile.
func (a *acquirer) reuse(ctx context.Context, kv *mvccpb.KeyValue, attrs subnet.LeaseAttrs, val []byte) (*subnet.Lease, error) {
	s := a.s
	key := string(kv.Key)
	v4, v6, err := subnet.ParseSubnetKey(key[len(s.subnets):])
	if err != nil {
		return nil, fmt.Errorf("reusing lease %q: %w", key, err)
	}
	old := clientv3.LeaseID(kv.Lease)
	id := old
	var exp time.Time
	start := time.Now()
	ka, err := s.cli.KeepAliveOnce(ctx, old)
	s.track("keepalive", start)
	switch {
	case err == nil:
		exp = start.Add(time.Duration(ka.TTL) * time.Second)
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		if id, err = a.leaseID(ctx); err != nil {
			return nil, err
		}
		exp = a.grant.Add(a.ttl)
	default:
		return nil, fmt.Errorf("refreshing etcd lease %x of %s: %w", int64(old), key, err)
	}
	if id == old && string(kv.Value) == string(val) {
		s.log.Info("reusing this node's lease", "subnet", v4, "key", key)
		return &subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, EtcdLease: int64(id),
			Expiration: exp, ModRevision: kv.ModRevision}, nil
	}
	start = time.Now()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(id))).
		Commit()
	s.track("txn", start)
	if err != nil {
		return nil, fmt.Errorf("rewriting lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, nil
	}
	if id == a.id {
		a.used = true
	}
	s.log.Info("reusing this node's lease, rewritten", "subnet", v4, "key", key, "etcd_lease_renewed", id != old)
	return &subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, EtcdLease: int64(id),
		Expiration: exp, ModRevision: resp.Header.Revision}, nil
}

// canonicalJSON re-encodes JSON with sorted keys and no spaces, for
// comparisons; invalid JSON is returned as is.
func canonicalJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
