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

// taken is what a listing says of one family's subnets.
type taken struct {
	// set holds every subnet of the family named by a key (whatever its
	// value).
	set map[netip.Prefix]bool
	// odd holds subnets named by keys of another length, which block every
	// subnet they overlap.
	odd []netip.Prefix
}

func (t *taken) add(p netip.Prefix, subnetLen int, network netip.Prefix) {
	if p.Bits() == subnetLen {
		t.set[p] = true
	} else if p.Overlaps(network) {
		t.odd = append(t.odd, p)
	}
}

func (t *taken) free(p netip.Prefix) bool {
	if t.set[p] {
		return false
	}
	for _, o := range t.odd {
		if o.Overlaps(p) {
			return false
		}
	}
	return true
}

// snapshot is what one Get of the subnets prefix tells the allocator.
type snapshot struct {
	rev    int64
	v4, v6 taken
	// own is the leased key holding this node's address, reserved the
	// reservation for it.
	own, reserved *mvccpb.KeyValue
	ownAttrs      subnet.LeaseAttrs
	resAttrs      subnet.LeaseAttrs
	// leases and reservations count the keys inside the allocation range
	// (of IPv4, or IPv6 in an IPv6-only network).
	leases, reservations int
}

// nodeIP returns the address that identifies a node in the network: its
// PublicIP, or in an IPv6-only network its PublicIPv6 (flannel matches
// PublicIP only, so its IPv6-only nodes, all 0.0.0.0, take each other's
// leases: COMPAT-WAVE2 5.13).
func nodeIP(cfg *subnet.Config, a subnet.LeaseAttrs) netip.Addr {
	if cfg.EnableIPv4 {
		return a.PublicIP
	}
	return a.IPv6()
}

// inNetwork reports whether a key's subnets make it a lease of the network
// cfg describes: its IPv4 subnet is one of Network's, or in an IPv6-only
// network its IPv6 subnet is one of IPv6Network's.
func inNetwork(cfg *subnet.Config, v4, v6 netip.Prefix) bool {
	if cfg.EnableIPv4 {
		return cfg.Contains(v4)
	}
	return cfg.ContainsIPv6(v6)
}

// list reads the subnets prefix once and classifies every key.
func (s *Store) list(ctx context.Context, cfg *subnet.Config, ip netip.Addr) (*snapshot, error) {
	start := time.Now()
	resp, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return nil, fmt.Errorf("listing leases under %s: %w", s.subnets, err)
	}
	return s.classify(resp.Kvs, resp.Header.Revision, cfg, ip), nil
}

// listFirst is list for the first listing of a LookupLease (acquire false)
// or an AcquireLease (acquire true): it takes the listing read ahead with
// the config when there is one for it (Options.PrefetchLeases).
func (s *Store) listFirst(ctx context.Context, cfg *subnet.Config, ip netip.Addr, acquire bool) (*snapshot, error) {
	if kvs, rev, ok := s.takePrefetched(acquire); ok {
		return s.classify(kvs, rev, cfg, ip), nil
	}
	return s.list(ctx, cfg, ip)
}

// classify turns a listing of the subnets prefix at revision rev into what
// the allocator needs to know of it for the node with address ip.
func (s *Store) classify(kvs []*mvccpb.KeyValue, rev int64, cfg *subnet.Config, ip netip.Addr) *snapshot {
	r4, r6 := cfg.Subnets(), cfg.IPv6Subnets()
	ipQuoted := []byte(`"` + ip.String() + `"`)
	sn := &snapshot{rev: rev,
		v4: taken{set: make(map[netip.Prefix]bool, len(kvs))},
		v6: taken{set: make(map[netip.Prefix]bool)}}
	for _, kv := range kvs {
		v4, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
		if err != nil {
			continue
		}
		if cfg.EnableIPv4 && v4.IsValid() {
			sn.v4.add(v4, cfg.SubnetLen, cfg.Network)
		}
		if cfg.EnableIPv6 && v6.IsValid() {
			sn.v6.add(v6, cfg.IPv6SubnetLen, cfg.IPv6Network)
		}
		if (cfg.EnableIPv4 && r4.Contains(v4)) || (!cfg.EnableIPv4 && r6.Contains(v6)) {
			if kv.Lease == 0 {
				sn.reservations++
			} else {
				sn.leases++
			}
		}
		if !inNetwork(cfg, v4, v6) {
			continue
		}
		// Decoding every value costs more than the Get itself with many
		// leases: only decode those that can name this address.
		if !bytes.Contains(kv.Value, ipQuoted) {
			continue
		}
		attrs, err := subnet.ParseLeaseAttrs(kv.Value)
		if err != nil || nodeIP(cfg, attrs) != ip {
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
	return sn
}

// AcquireLease leases a subnet of each family the config has on for a node
// advertising attrs. In order of preference it takes: the leased key already
// holding the node's address (PublicIP, or PublicIPv6 in an IPv6-only
// network; kept bound to its live etcd lease, or rebound to a new one, and
// re-keyed with its IPv4 subnet kept when the config gained or lost IPv6), a
// reservation for that address (used as is), opts.Hint and opts.HintIPv6
// when free, or random free subnets in [SubnetMin, SubnetMax] (and
// [IPv6SubnetMin, IPv6SubnetMax]). Creation is a create-if-absent
// transaction that also finds any key of the same IPv4 subnet, so two nodes
// never hold one subnet. It returns an error wrapping ErrNoFreeSubnet when a
// family's range is full.
func (s *Store) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, opts subnet.AcquireOptions) (*subnet.Lease, error) {
	ip := nodeIP(cfg, attrs)
	switch {
	case cfg.EnableIPv4 && !attrs.PublicIP.IsValid():
		return nil, fmt.Errorf("acquiring a lease: attributes have no PublicIP")
	case cfg.EnableIPv6 && !attrs.IPv6().IsValid():
		return nil, fmt.Errorf("acquiring a lease: IPv6 is on in the network config, but the attributes have no PublicIPv6")
	}
	val, err := attrs.Marshal()
	if err != nil {
		return nil, err
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = s.ttl
	}
	a := &acquirer{s: s, ttl: ttl, cfg: cfg}
	defer a.release()
	defer s.dropGrantAhead() // one granted ahead and not needed (a node that keeps its own)

	for round := 0; round < maxAcquireRounds; round++ {
		var sn *snapshot
		if round == 0 {
			sn, err = s.listFirst(ctx, cfg, ip, true)
		} else {
			sn, err = s.list(ctx, cfg, ip)
		}
		if err != nil {
			return nil, err
		}
		if sn.own != nil {
			l, err := a.reuse(ctx, sn, attrs, val)
			if err != nil || l != nil {
				return l, err
			}
			continue // the key changed under us: look again
		}
		if sn.reserved != nil {
			return s.useReservation(ctx, cfg, sn.reserved, sn.resAttrs, attrs)
		}
		hint4, hint6 := netip.Prefix{}, netip.Prefix{}
		if cfg.EnableIPv4 && cfg.Subnets().Contains(opts.Hint) && sn.v4.free(opts.Hint) {
			hint4 = opts.Hint
		}
		if cfg.EnableIPv6 && cfg.IPv6Subnets().Contains(opts.HintIPv6) && sn.v6.free(opts.HintIPv6) {
			hint6 = opts.HintIPv6
		}
		if hint4.IsValid() || hint6.IsValid() {
			p4, p6, ok := a.pick(sn, hint4, hint6)
			if ok {
				l, err := a.create(ctx, sn, p4, p6, attrs, val)
				if err != nil || l != nil {
					return l, err
				}
			}
		}
		// Try free subnets from this listing until one sticks; each lost
		// race marks its subnets taken.
		for {
			p4, p6, ok := a.pick(sn, netip.Prefix{}, netip.Prefix{})
			if !ok {
				break
			}
			l, err := a.create(ctx, sn, p4, p6, attrs, val)
			if err != nil || l != nil {
				return l, err
			}
		}
		if a.lost == 0 || round == maxAcquireRounds-1 {
			return nil, exhausted(cfg, sn)
		}
		// We lost races on a listing that may be stale in the other
		// direction too (keys deleted since): confirm with a fresh one.
		a.lost = 0
	}
	return nil, fmt.Errorf("acquiring a lease in %s: gave up after %d rounds of lost races", networks(cfg), maxAcquireRounds)
}

// networks names the config's networks for messages.
func networks(cfg *subnet.Config) string {
	switch {
	case cfg.EnableIPv4 && cfg.EnableIPv6:
		return cfg.Network.String() + " and " + cfg.IPv6Network.String()
	case cfg.EnableIPv6:
		return cfg.IPv6Network.String()
	}
	return cfg.Network.String()
}

// pick chooses a free subnet of each family the config has on: the hint
// when valid, else one at random. ok is false when a family has none left.
func (a *acquirer) pick(sn *snapshot, hint4, hint6 netip.Prefix) (p4, p6 netip.Prefix, ok bool) {
	if a.cfg.EnableIPv4 {
		p4 = hint4
		if !p4.IsValid() {
			if p4, ok = pickFree(a.cfg.Subnets(), &sn.v4); !ok {
				return p4, p6, false
			}
		}
	}
	if a.cfg.EnableIPv6 {
		p6 = hint6
		if !p6.IsValid() {
			if p6, ok = pickFree(a.cfg.IPv6Subnets(), &sn.v6); !ok {
				return p4, p6, false
			}
		}
	}
	return p4, p6, true
}

// LookupLease implements subnet.Manager: with one Get, the key AcquireLease
// would take back for publicIP (the newest leased key holding it, else a
// reservation for it), or nil when there is none. Only keys of the network
// (cfg) count, as for AcquireLease.
func (s *Store) LookupLease(ctx context.Context, cfg *subnet.Config, publicIP netip.Addr) (*subnet.Lease, error) {
	if !publicIP.IsValid() {
		return nil, fmt.Errorf("looking up this node's lease: no PublicIP")
	}
	if cfg.EnableIPv4 != publicIP.Is4() {
		// The node is known by the address of the network's first family.
		return nil, fmt.Errorf("looking up this node's lease: %s is not an address of the network's %s family", publicIP, map[bool]string{true: "IPv4", false: "IPv6"}[cfg.EnableIPv4])
	}
	sn, err := s.listFirst(ctx, cfg, publicIP, false)
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
	if cfg.EnableIPv4 {
		r := cfg.Subnets()
		if _, ok := pickFree(r, &sn.v4); !ok {
			return fmt.Errorf("%w: network %s with SubnetLen %d has %d subnets in [%s, %s], held by %d leases and %d reservations",
				subnet.ErrNoFreeSubnet, cfg.Network, cfg.SubnetLen, r.Count(), r.Min, r.Max, sn.leases, sn.reservations)
		}
	}
	r := cfg.IPv6Subnets()
	return fmt.Errorf("%w: IPv6 network %s with IPv6SubnetLen %d has %d subnets in [%s, %s], all held",
		subnet.ErrNoFreeSubnet, cfg.IPv6Network, cfg.IPv6SubnetLen, r.Count(), r.Min, r.Max)
}

// pickFree returns a free subnet of r chosen at random, so that racing nodes
// rarely collide.
func pickFree(r subnet.SubnetRange, sn *taken) (netip.Prefix, bool) {
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

func (s *Store) useReservation(ctx context.Context, cfg *subnet.Config, kv *mvccpb.KeyValue, stored, want subnet.LeaseAttrs) (*subnet.Lease, error) {
	v4, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
	if err != nil {
		return nil, fmt.Errorf("using reservation %q: %w", kv.Key, err)
	}
	if cfg.EnableIPv6 && !cfg.ContainsIPv6(v6) {
		// A reservation is the operator's: it is not re-keyed here.
		return nil, fmt.Errorf("reservation %s for %s has no IPv6 subnet of %s, but IPv6 is on: reserve the node's subnets again with an IPv6 part (weft leases reserve)", kv.Key, nodeIP(cfg, want), cfg.IPv6Network)
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
	cfg   *subnet.Config
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
	if id, at, ok := a.s.takeGrantAhead(ctx, a.ttl); ok {
		a.id, a.grant = id, at
		return a.id, nil
	}
	start := time.Now()
	resp, err := a.s.cli.Grant(ctx, ttlSeconds(a.ttl))
	a.s.track("grant", start)
	if err != nil {
		return 0, fmt.Errorf("granting an etcd lease of %v: %w", a.ttl, err)
	}
	a.id, a.grant = resp.ID, start
	return a.id, nil
}

// ttlSeconds is a TTL as etcd takes it: whole seconds, rounded up.
func ttlSeconds(ttl time.Duration) int64 { return int64((ttl + time.Second - 1) / time.Second) }

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

// guards returns the conditions under which a key for p4 and p6 may be
// created: the key does not exist and, for an IPv4 subnet, no key of that
// subnet exists at all (an IPv4-only and a dual-stack key of one subnet
// differ only after the IPv4 part). except is a key that may exist (the one
// being replaced).
func (a *acquirer) guards(key string, p4 netip.Prefix) []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if p4.IsValid() {
		// "10.244.3.0-24" is a prefix of "10.244.3.0-24&…" and of no other
		// subnet's key of that length.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(a.s.subnets+subnet.SubnetKey(p4, netip.Prefix{})), "=", 0).WithPrefix())
	}
	return cmps
}

// create tries to create the key for p4 and p6 (either may be absent). It
// returns (nil, nil) when another node holds one of them, having marked
// them taken in sn.
func (a *acquirer) create(ctx context.Context, sn *snapshot, p4, p6 netip.Prefix, attrs subnet.LeaseAttrs, val []byte) (*subnet.Lease, error) {
	id, err := a.leaseID(ctx)
	if err != nil {
		return nil, err
	}
	key := a.s.subnets + subnet.SubnetKey(p4, p6)
	start := time.Now()
	resp, err := a.s.cli.Txn(ctx).
		If(a.guards(key, p4)...).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(id))).
		Commit()
	a.s.track("txn", start)
	if err != nil {
		return nil, fmt.Errorf("creating lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		a.lose(sn, p4, p6)
		return nil, nil
	}
	if p4.IsValid() && p6.IsValid() {
		// Keys of one IPv6 subnet with different IPv4 subnets cannot be
		// excluded by the transaction: look, and give way to an older one.
		if lost, err := a.checkV6(ctx, key, p6, resp.Header.Revision); err != nil || lost {
			if lost {
				a.lose(sn, netip.Prefix{}, p6)
			}
			return nil, err
		}
	}
	a.used = true
	a.s.log.Info("leased a subnet", "subnet", p4, "ipv6_subnet", p6, "key", key, "ttl", a.ttl, "public_ip", attrs.PublicIP, "public_ipv6", attrs.IPv6())
	return &subnet.Lease{Subnet: p4, IPv6Subnet: p6, Attrs: attrs, EtcdLease: int64(id),
		Expiration: a.grant.Add(a.ttl), ModRevision: resp.Header.Revision}, nil
}

// lose marks subnets taken after a lost race.
func (a *acquirer) lose(sn *snapshot, p4, p6 netip.Prefix) {
	if p4.IsValid() {
		sn.v4.set[p4] = true
	} else if p6.IsValid() {
		sn.v6.set[p6] = true
	}
	a.lost++
}

// checkV6 looks for another key holding p6 created before ours (at rev);
// if there is one, it deletes ours and reports lost.
func (a *acquirer) checkV6(ctx context.Context, key string, p6 netip.Prefix, rev int64) (lost bool, err error) {
	s := a.s
	start := time.Now()
	resp, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	s.track("get", start)
	if err != nil {
		return false, fmt.Errorf("checking lease %s for a competing holder of %s: %w", key, p6, err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == key {
			continue
		}
		if _, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):])); err == nil && v6 == p6 {
			start = time.Now()
			_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
			s.track("txn", start)
			if err != nil {
				return false, fmt.Errorf("giving way to %s, which holds %s: deleting %s: %w", kv.Key, p6, key, err)
			}
			s.log.Info("another key holds the same IPv6 subnet; gave way", "key", key, "other", string(kv.Key))
			return true, nil
		}
	}
	return false, nil
}

// fits reports whether a key's subnets are what the config wants of this
// node's lease: an IPv4 subnet of the network if and only if IPv4 is on,
// and likewise for IPv6.
func fits(cfg *subnet.Config, v4, v6 netip.Prefix) bool {
	return cfg.Contains(v4) == cfg.EnableIPv4 && v4.IsValid() == cfg.EnableIPv4 &&
		cfg.ContainsIPv6(v6) == cfg.EnableIPv6 && v6.IsValid() == cfg.EnableIPv6
}

// reuse takes back this node's existing leased key. If its etcd lease is
// alive it is refreshed and kept; otherwise the key is rebound to a new etcd
// lease. The value is rewritten when attrs changed (e.g. a new VtepMAC).
// When the config gained or lost a family (IPv6 turned on), the key is
// replaced by one with the same IPv4 subnet (flanneld would delete the
// lease and renumber the node: COMPAT-WAVE2 5.14). It returns (nil, nil)
// when the key changed meanwhile.
func (a *acquirer) reuse(ctx context.Context, sn *snapshot, attrs subnet.LeaseAttrs, val []byte) (*subnet.Lease, error) {
	s := a.s
	kv := sn.own
	key := string(kv.Key)
	v4, v6, err := subnet.ParseSubnetKey(key[len(s.subnets):])
	if err != nil {
		return nil, fmt.Errorf("reusing lease %q: %w", key, err)
	}
	if !fits(a.cfg, v4, v6) {
		return a.rekey(ctx, sn, v4, v6, attrs, val)
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
		s.log.Info("reusing this node's lease", "subnet", v4, "ipv6_subnet", v6, "key", key)
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
	s.log.Info("reusing this node's lease, rewritten", "subnet", v4, "ipv6_subnet", v6, "key", key, "etcd_lease_renewed", id != old)
	return &subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, EtcdLease: int64(id),
		Expiration: exp, ModRevision: resp.Header.Revision}, nil
}

// rekey replaces this node's key, whose families no longer fit the config,
// by one that does, in one transaction: the IPv4 subnet is kept (IPv4 being
// on), the IPv6 subnet kept when it fits, else a free one taken. It returns
// (nil, nil) when the old key changed or the new one was taken meanwhile.
func (a *acquirer) rekey(ctx context.Context, sn *snapshot, v4, v6 netip.Prefix, attrs subnet.LeaseAttrs, val []byte) (*subnet.Lease, error) {
	s, cfg, kv := a.s, a.cfg, sn.own
	n4, n6 := netip.Prefix{}, netip.Prefix{}
	if cfg.EnableIPv4 {
		n4 = v4 // inNetwork: this is a subnet of the network
	}
	if cfg.EnableIPv6 {
		if cfg.ContainsIPv6(v6) {
			n6 = v6
		} else {
			var ok bool
			if n6, ok = pickFree(cfg.IPv6Subnets(), &sn.v6); !ok {
				return nil, exhausted(cfg, sn)
			}
		}
	}
	if !n4.IsValid() && !n6.IsValid() {
		return nil, fmt.Errorf("re-keying lease %s: no subnet of the network's families to keep or take", kv.Key)
	}
	id, err := a.leaseID(ctx)
	if err != nil {
		return nil, err
	}
	key := s.subnets + subnet.SubnetKey(n4, n6)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	start := time.Now()
	resp, err := s.cli.Txn(ctx).If(cmps...).
		Then(clientv3.OpDelete(string(kv.Key)), clientv3.OpPut(key, string(val), clientv3.WithLease(id))).
		Commit()
	s.track("txn", start)
	if err != nil {
		return nil, fmt.Errorf("re-keying lease %s as %s: %w", kv.Key, key, err)
	}
	if !resp.Succeeded {
		return nil, nil
	}
	if n4.IsValid() && n6.IsValid() && n6 != v6 {
		if lost, err := a.checkV6(ctx, key, n6, resp.Header.Revision); err != nil || lost {
			// The old key is gone; the next round acquires afresh (the
			// hint keeps the IPv4 subnet).
			return nil, err
		}
	}
	a.used = true
	if kv.Lease != 0 && clientv3.LeaseID(kv.Lease) != id {
		s.revokeQuietly(kv.Lease)
	}
	s.log.Info("the network's families changed: re-keyed this node's lease, keeping its IPv4 subnet", "old", string(kv.Key), "new", key)
	return &subnet.Lease{Subnet: n4, IPv6Subnet: n6, Attrs: attrs, EtcdLease: int64(id),
		Expiration: a.grant.Add(a.ttl), ModRevision: resp.Header.Revision}, nil
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
