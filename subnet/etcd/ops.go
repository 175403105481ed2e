package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// This file holds what the operator tools (`weft leases`, `weft node
// teardown`) do with leases, so that the lease key schema is written in
// this package only.

// ErrHeld is returned by Reserve when another node holds the subnet.
var ErrHeld = errors.New("subnet is held by another node")

// ErrNotFound is returned by DeleteSubnet when the subnet has no key.
var ErrNotFound = errors.New("no lease or reservation")

// ErrLeaseTaken is returned by ReleaseLease when the lease's key is bound to
// another etcd lease than the one being released (another node took it).
var ErrLeaseTaken = errors.New("lease taken by another holder")

// ReadConfig reads and parses <prefix>/config once; unlike GetNetworkConfig
// it does not wait for a missing or invalid config.
func (s *Store) ReadConfig(ctx context.Context) (*subnet.Config, error) {
	cfg, _, _, err := s.readConfig(ctx)
	return cfg, err
}

// decodeLease decodes a lease key (below the subnets prefix) and value as
// far as they allow: the returned lease carries the subnets when the key
// parses and the attributes when the value does. The error says what did
// not decode.
func decodeLease(name string, kv *mvccpb.KeyValue) (subnet.Lease, error) {
	l := subnet.Lease{EtcdLease: kv.Lease, ModRevision: kv.ModRevision}
	v4, v6, err := subnet.ParseSubnetKey(name)
	if err != nil {
		return l, err
	}
	l.Subnet, l.IPv6Subnet = v4, v6
	attrs, err := subnet.ParseLeaseAttrs(kv.Value)
	if err != nil {
		return l, err
	}
	l.Attrs = attrs
	return l, nil
}

// findSubnet returns the key holding sn, a subnet of either family (with
// its name below the subnets prefix), or nil. An IPv4 subnet is found with
// one Get of the keys it starts (the IPv4-only key and any dual-stack one);
// an IPv6 subnet needs a listing of the keys.
func (s *Store) findSubnet(ctx context.Context, sn netip.Prefix) (*mvccpb.KeyValue, string, error) {
	from := s.subnets
	if sn.Addr().Is4() {
		from += subnet.SubnetKey(sn, netip.Prefix{})
	}
	start := time.Now()
	resp, err := s.cli.Get(ctx, from, clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", from, err)
	}
	for _, kv := range resp.Kvs {
		name := string(kv.Key[len(s.subnets):])
		if v4, v6, err := subnet.ParseSubnetKey(name); err == nil && (v4 == sn || v6 == sn) {
			return kv, name, nil
		}
	}
	return nil, "", nil
}

// GetLease returns the lease or reservation holding sn (a subnet of either
// family), or nil and no error when there is none. A key whose value does
// not decode is returned with an error wrapping subnet.ErrInvalidLease
// beside it.
func (s *Store) GetLease(ctx context.Context, sn netip.Prefix) (*subnet.Lease, error) {
	kv, name, err := s.findSubnet(ctx, sn)
	if kv == nil {
		return nil, err
	}
	l, err := decodeLease(name, kv)
	if err != nil {
		return &l, fmt.Errorf("%s: %w", s.subnets+name, err)
	}
	return &l, nil
}

// Listing is the network config and every key under the subnets prefix,
// read in one Get, as an operator sees them: invalid leases included.
type Listing struct {
	// RawConfig is the stored config value, nil when the key is missing;
	// Config is it parsed, or nil with ConfigErr saying why.
	RawConfig []byte
	Config    *subnet.Config
	ConfigErr error
	// Entries are the lease keys in etcd's (key) order.
	Entries []Entry
}

// Entry is one key under the subnets prefix.
type Entry struct {
	// Name is the key below <prefix>/subnets/, e.g. "10.244.3.0-24".
	Name  string
	Value []byte
	// Lease is decoded as far as the key and value allow.
	Lease subnet.Lease
	// TTL is what is left of the etcd lease (-1 s when it is gone; 0 for a
	// reservation).
	TTL time.Duration
	// Invalid says why agents skip the lease, or is nil.
	Invalid error
}

// ListLeases reads the config and the leases with one Get, validates every
// lease against the config as the lease watch does, and asks etcd for the
// remaining TTL of each etcd lease.
func (s *Store) ListLeases(ctx context.Context) (*Listing, error) {
	start := time.Now()
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return nil, fmt.Errorf("reading %s/ from etcd: %w", s.prefix, err)
	}
	out := &Listing{}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == s.configKey {
			out.RawConfig = kv.Value
			out.Config, _, out.ConfigErr = subnet.ParseConfig(kv.Value)
			continue
		}
		name, ok := strings.CutPrefix(string(kv.Key), s.subnets)
		if !ok {
			continue
		}
		l, err := decodeLease(name, kv)
		out.Entries = append(out.Entries, Entry{Name: name, Value: kv.Value, Lease: l, Invalid: err})
	}
	if out.RawConfig == nil {
		out.ConfigErr = fmt.Errorf("no network config at %s", s.configKey)
	}
	ttls := map[int64]time.Duration{}
	for i := range out.Entries {
		e := &out.Entries[i]
		if e.Invalid == nil && out.Config != nil {
			e.Invalid = out.Config.ValidateLease(&e.Lease, s.validator(out.Config))
		}
		id := e.Lease.EtcdLease
		if id == 0 {
			continue
		}
		ttl, ok := ttls[id]
		if !ok {
			ttl = -time.Second
			start := time.Now()
			r, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(id))
			s.track("ttl", start)
			if err == nil && r.TTL >= 0 {
				ttl = time.Duration(r.TTL) * time.Second
			}
			ttls[id] = ttl
		}
		e.TTL = ttl
	}
	return out, nil
}

// Reserve writes a reservation of the IPv4 subnet sn for publicIP; see
// ReserveSubnets.
func (s *Store) Reserve(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) (string, error) {
	return s.ReserveSubnets(ctx, sn, netip.Prefix{}, publicIP, netip.Addr{})
}

// ReserveSubnets writes a reservation of sn4 and sn6 for the node with
// public addresses ip4 and ip6: a lease key with no etcd lease, which
// agents never expire and which that node takes (a node is its PublicIP,
// or its PublicIPv6 in an IPv6-only network). It needs a subnet and an
// address of each family the config has on, and none of a family that is
// off. A subnet leased by the same node becomes a reservation keeping its
// attributes (so its peers keep their routes); a subnet of either family
// held by another key is refused with ErrHeld. It says what it did.
func (s *Store) ReserveSubnets(ctx context.Context, sn4, sn6 netip.Prefix, ip4, ip6 netip.Addr) (string, error) {
	cfg, err := s.ReadConfig(ctx)
	if err != nil {
		return "", err
	}
	if cfg.EnableIPv4 {
		if !ip4.Is4() || !subnet.IsUsableUnicast(ip4) {
			return "", fmt.Errorf("public IP %v: want a unicast IPv4 address", ip4)
		}
		if !cfg.Contains(sn4) {
			return "", fmt.Errorf("subnet %s is not a /%d inside network %s", sn4, cfg.SubnetLen, cfg.Network)
		}
	} else if sn4.IsValid() || ip4.IsValid() {
		return "", errors.New("the network is IPv6-only: give an IPv6 subnet and address only")
	}
	if cfg.EnableIPv6 {
		if !subnet.IsUsableUnicast6(ip6) {
			return "", fmt.Errorf("public IPv6 %v: IPv6 is on; give the node's global IPv6 address too (PUBLIC-IP as 192.0.2.5,2001:db8::5)", ip6)
		}
		if !cfg.ContainsIPv6(sn6) {
			return "", fmt.Errorf("IPv6 subnet %v is not a /%d inside IPv6 network %s (IPv6 is on; give SUBNET as 10.244.5.0/24,fd00:10:244:5::/64)", sn6, cfg.IPv6SubnetLen, cfg.IPv6Network)
		}
	} else if sn6.IsValid() || ip6.IsValid() {
		return "", errors.New("IPv6 is off in the network config: give an IPv4 subnet and address only")
	}
	name := subnet.SubnetKey(sn4, sn6)
	key := s.subnets + name
	attrs := subnet.LeaseAttrs{PublicIP: ip4, BackendType: cfg.BackendType}
	if ip6.IsValid() {
		attrs.PublicIPv6 = &ip6
	}
	// Any key naming one of the subnets: one Get of the prefix.
	start := time.Now()
	all, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", s.subnets, err)
	}
	cmp := clientv3.Compare(clientv3.Version(key), "=", 0)
	what := "reserved"
	for _, kv := range all.Kvs {
		v4, v6, perr := subnet.ParseSubnetKey(string(kv.Key[len(s.subnets):]))
		mine := string(kv.Key) == key
		if !mine && (perr != nil || (!sn4.IsValid() || v4 != sn4) && (!sn6.IsValid() || v6 != sn6)) {
			continue
		}
		old, err := subnet.ParseLeaseAttrs(kv.Value)
		if mine && err == nil && old.NodeIP() == attrs.NodeIP() {
			if kv.Lease == 0 {
				return "already reserved", nil
			}
			attrs = old // keep the node's backend data
			what = "turned the lease into a reservation"
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
			continue
		}
		holder := "an unreadable value"
		if err == nil {
			holder = old.NodeIP().String()
		}
		return "", fmt.Errorf("%w: %s is held by %s (key %s); release it first (weft leases release %s)", ErrHeld, strings.ReplaceAll(name, "-", "/"), holder, kv.Key, cmpOr(sn4, sn6))
	}
	val, err := attrs.Marshal()
	if err != nil {
		return "", err
	}
	start = time.Now()
	tx, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
	s.track("txn", start)
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", key, err)
	}
	if !tx.Succeeded {
		return "", fmt.Errorf("%s changed while reserving it; try again", key)
	}
	return what, nil
}

// cmpOr returns the first valid prefix.
func cmpOr(ps ...netip.Prefix) netip.Prefix {
	for _, p := range ps {
		if p.IsValid() {
			return p
		}
	}
	return netip.Prefix{}
}

// DeleteSubnet deletes the lease or reservation holding sn (a subnet of
// either family: the whole key goes, with the node's other subnet),
// whoever holds it (an operator's release); ErrNotFound when there is none.
func (s *Store) DeleteSubnet(ctx context.Context, sn netip.Prefix) error {
	kv, name, err := s.findSubnet(ctx, sn)
	if err != nil {
		return err
	}
	if kv == nil {
		return fmt.Errorf("%w for %s (no key under %s names it)", ErrNotFound, sn, s.subnets)
	}
	key := s.subnets + name
	start := time.Now()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
	s.track("txn", start)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s changed while deleting it; try again", key)
	}
	return nil
}

// PutReservations writes leases as reservations (lease keys with no etcd
// lease), overwriting whatever holds those keys, in transactions of up to
// 100 puts. It is for bulk loading (synthetic peers in benchmarks, a
// restore): nothing is checked against the network config.
func (s *Store) PutReservations(ctx context.Context, leases []subnet.Lease) error {
	const batch = 100
	for i := 0; i < len(leases); i += batch {
		var ops []clientv3.Op
		for _, l := range leases[i:min(i+batch, len(leases))] {
			val, err := l.Attrs.Marshal()
			if err != nil {
				return fmt.Errorf("lease %s: %w", l.Subnet, err)
			}
			ops = append(ops, clientv3.OpPut(s.subnets+subnet.SubnetKey(l.Subnet, l.IPv6Subnet), string(val)))
		}
		start := time.Now()
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		s.track("txn", start)
		if err != nil {
			return fmt.Errorf("writing %d leases from %s: %w", len(ops), leases[i].Subnet, err)
		}
	}
	return nil
}
