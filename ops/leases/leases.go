// Package leases is `weft leases`: it reads the network config and every
// lease under an etcd prefix in one Get, renders them for a person (a
// table) or a script (JSON), and writes and deletes operators'
// reservations (lease keys with no etcd lease).
package leases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Row is one lease or reservation as `weft leases` shows it.
type Row struct {
	// Key is the key below <prefix>/subnets/, e.g. "10.244.3.0-24".
	Key        string `json:"key"`
	Subnet     string `json:"subnet,omitempty"`
	IPv6Subnet string `json:"ipv6Subnet,omitempty"`
	PublicIP   string `json:"publicIP,omitempty"`
	PublicIPv6 string `json:"publicIPv6,omitempty"`
	Backend    string `json:"backendType,omitempty"`
	VtepMAC    string `json:"vtepMAC,omitempty"`
	VtepMACv6  string `json:"vtepMACv6,omitempty"`
	// Reservation is true for a key with no etcd lease.
	Reservation bool `json:"reservation"`
	// EtcdLease is the etcd lease ID (hex, as etcdctl prints it).
	EtcdLease string `json:"etcdLease,omitempty"`
	// ExpiresInSeconds is the etcd lease's remaining TTL; absent for a
	// reservation, -1 when the etcd lease is already gone.
	ExpiresInSeconds *int64 `json:"expiresInSeconds,omitempty"`
	// Invalid is the reason the lease fails validation (agents ignore
	// it), or empty.
	Invalid string `json:"invalid,omitempty"`
	// Value is the raw stored value.
	Value json.RawMessage `json:"value"`
}

// Report is the whole answer of `weft leases`.
type Report struct {
	Prefix string `json:"prefix"`
	// Config is the raw network config, ConfigError why it is unusable.
	Config      json.RawMessage `json:"config,omitempty"`
	ConfigError string          `json:"configError,omitempty"`
	Network     string          `json:"network,omitempty"`
	IPv6Network string          `json:"ipv6Network,omitempty"`
	BackendType string          `json:"backendType,omitempty"`
	Leases      []Row           `json:"leases"`
}

// Etcd is the part of the etcd client `weft leases` uses.
type Etcd interface {
	clientv3.KV
	TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error)
}

// List reads the config and the leases under prefix with one Get, then asks
// for the remaining TTL of each etcd lease.
func List(ctx context.Context, c Etcd, prefix string) (*Report, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	resp, err := c.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading %s/ from etcd: %w", prefix, err)
	}
	rep := &Report{Prefix: prefix, Leases: []Row{}}
	var cfg *subnet.Config
	var leases []*subnet.Lease
	var rows []*Row
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		if key == prefix+"/config" {
			rep.Config = rawOrString(kv.Value)
			c, _, err := subnet.ParseConfig(kv.Value)
			if err != nil {
				rep.ConfigError = err.Error()
			} else {
				cfg = c
				if c.EnableIPv4 {
					rep.Network = c.Network.String()
				}
				if c.EnableIPv6 {
					rep.IPv6Network = c.IPv6Network.String()
				}
				rep.BackendType = c.BackendType
			}
			continue
		}
		name, ok := strings.CutPrefix(key, prefix+"/subnets/")
		if !ok {
			continue
		}
		l, row := parseLease(name, kv.Value, kv.Lease)
		leases = append(leases, l)
		rows = append(rows, row)
	}
	if rep.Config == nil {
		rep.ConfigError = "no network config at " + prefix + "/config"
	}
	ttls := map[int64]int64{}
	for i, row := range rows {
		l := leases[i]
		if row.Invalid == "" && cfg != nil {
			if err := cfg.ValidateLease(l, registry.ValidateData(cfg)); err != nil {
				row.Invalid = strings.TrimPrefix(err.Error(), subnet.ErrInvalidLease.Error()+": ")
			}
		}
		if l.EtcdLease != 0 {
			ttl, ok := ttls[l.EtcdLease]
			if !ok {
				ttl = -1
				if r, err := c.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLease)); err == nil {
					ttl = r.TTL
				}
				ttls[l.EtcdLease] = ttl
			}
			row.ExpiresInSeconds = &ttl
		}
		rep.Leases = append(rep.Leases, *row)
	}
	sort.SliceStable(rep.Leases, func(i, j int) bool { return lessRow(rep.Leases[i], rep.Leases[j]) })
	return rep, nil
}

// parseLease decodes one lease key and value into a lease (for validation)
// and a row; a row that cannot be decoded is marked invalid.
func parseLease(name string, value []byte, etcdLease int64) (*subnet.Lease, *Row) {
	row := &Row{Key: name, Reservation: etcdLease == 0, Value: rawOrString(value)}
	if etcdLease != 0 {
		row.EtcdLease = fmt.Sprintf("%x", etcdLease)
	}
	l := &subnet.Lease{EtcdLease: etcdLease}
	v4, v6, err := subnet.ParseSubnetKey(name)
	if err != nil {
		row.Invalid = strings.TrimPrefix(err.Error(), subnet.ErrInvalidLease.Error()+": ")
		return l, row
	}
	l.Subnet, l.IPv6Subnet = v4, v6
	if v4.IsValid() {
		row.Subnet = v4.String()
	}
	if v6.IsValid() {
		row.IPv6Subnet = v6.String()
	}
	attrs, err := subnet.ParseLeaseAttrs(value)
	if err != nil {
		row.Invalid = strings.TrimPrefix(err.Error(), subnet.ErrInvalidLease.Error()+": ")
		return l, row
	}
	l.Attrs = attrs
	if attrs.PublicIP.IsValid() {
		row.PublicIP = attrs.PublicIP.String()
	}
	if v6 := attrs.IPv6(); v6.IsValid() {
		row.PublicIPv6 = v6.String()
	}
	row.Backend = attrs.BackendType
	row.VtepMAC, row.VtepMACv6 = vtepMAC(attrs.BackendData), vtepMAC(attrs.BackendV6Data)
	return l, row
}

// vtepMAC returns the VtepMAC of vxlan backend data, or "".
func vtepMAC(data json.RawMessage) string {
	var bd struct {
		VtepMAC string `json:"VtepMAC"`
	}
	if len(data) > 0 && json.Unmarshal(data, &bd) == nil {
		return bd.VtepMAC
	}
	return ""
}

// lessRow orders rows by subnet address (IPv6-only rows by their IPv6
// subnet, after the others), undecodable keys last.
func lessRow(a, b Row) bool {
	first := func(r Row) string {
		if r.Subnet != "" {
			return r.Subnet
		}
		return r.IPv6Subnet
	}
	pa, ea := netip.ParsePrefix(first(a))
	pb, eb := netip.ParsePrefix(first(b))
	switch {
	case ea == nil && eb == nil:
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c < 0
		}
		return pa.Bits() < pb.Bits()
	case ea == nil:
		return true
	case eb == nil:
		return false
	}
	return a.Key < b.Key
}

// rawOrString keeps valid JSON as is and quotes anything else.
func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	q, _ := json.Marshal(string(b))
	return q
}

// FormatExpiry renders a row's expiry for a person.
func FormatExpiry(r Row) string {
	switch {
	case r.Reservation:
		return "reservation"
	case r.ExpiresInSeconds == nil || *r.ExpiresInSeconds < 0:
		return "expired"
	}
	return (time.Duration(*r.ExpiresInSeconds) * time.Second).String()
}

// RenderTable writes the report as a table for a person.
func RenderTable(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	switch {
	case rep.ConfigError != "":
		fmt.Fprintf(tw, "network config: %s\n", rep.ConfigError)
	default:
		nets := rep.Network
		switch {
		case nets == "":
			nets = rep.IPv6Network
		case rep.IPv6Network != "":
			nets += " and " + rep.IPv6Network
		}
		fmt.Fprintf(tw, "network %s, backend %s, %d leases under %s/subnets\n", nets, rep.BackendType, len(rep.Leases), rep.Prefix)
	}
	if len(rep.Leases) == 0 {
		return tw.Flush()
	}
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tVTEP MAC\tEXPIRES IN\tVALID")
	for _, r := range rep.Leases {
		subnet := strings.TrimSpace(r.Subnet + " " + r.IPv6Subnet)
		if subnet == "" {
			subnet = r.Key
		}
		pub := strings.TrimSpace(r.PublicIP + " " + r.PublicIPv6)
		mac := strings.TrimSpace(r.VtepMAC + " " + r.VtepMACv6)
		valid := "ok"
		if r.Invalid != "" {
			valid = "INVALID: " + r.Invalid
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", subnet, dash(pub), dash(r.Backend), dash(mac), FormatExpiry(r), valid)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// RenderJSON writes the report as indented JSON.
func RenderJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("encoding leases: %w", err)
	}
	return nil
}

// ParseSubnet accepts an IPv4 subnet as "10.244.5.0/24" or in key form
// "10.244.5.0-24".
func ParseSubnet(s string) (netip.Prefix, error) {
	sn, err := ParseSubnets(s)
	if err != nil || sn.V6.IsValid() || !sn.V4.IsValid() {
		return netip.Prefix{}, fmt.Errorf("subnet %q: want an IPv4 subnet base address with its length, e.g. 10.244.5.0/24", s)
	}
	return sn.V4, nil
}

// Subnets names a node's subnets: one of each family it leases.
type Subnets struct {
	V4, V6 netip.Prefix
}

// String renders the subnets as ParseSubnets reads them.
func (s Subnets) String() string {
	var parts []string
	for _, p := range []netip.Prefix{s.V4, s.V6} {
		if p.IsValid() {
			parts = append(parts, p.String())
		}
	}
	return strings.Join(parts, ",")
}

// ParseSubnets accepts a node's subnets: "10.244.5.0/24", "fd00:10:244:5::/64"
// (IPv6-only), "10.244.5.0/24,fd00:10:244:5::/64" (dual-stack), or a lease
// key ("10.244.5.0-24&fd00:10:244:5::-64", "0.0.0.0-0&fd00:10:244:5::-64").
func ParseSubnets(s string) (Subnets, error) {
	var out Subnets
	if v4, v6, err := subnet.ParseSubnetKey(s); err == nil {
		return Subnets{v4, v6}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return out, fmt.Errorf("subnets %q: want at most one IPv4 and one IPv6 subnet, e.g. 10.244.5.0/24,fd00:10:244:5::/64", s)
	}
	for _, part := range parts {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			if v4, v6, kerr := subnet.ParseSubnetKey(part); kerr == nil && !v6.IsValid() {
				p, err = v4, nil
			}
		}
		if err != nil || p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return out, fmt.Errorf("subnet %q: want a subnet base address with its length, e.g. 10.244.5.0/24 or fd00:10:244:5::/64", part)
		}
		dst := &out.V6
		if p.Addr().Is4() {
			dst = &out.V4
		}
		if dst.IsValid() {
			return out, fmt.Errorf("subnets %q: two subnets of one family", s)
		}
		*dst = p
	}
	return out, nil
}

// ParseAddrs accepts a node's public addresses: "192.0.2.5", "2001:db8::5"
// or "192.0.2.5,2001:db8::5".
func ParseAddrs(s string) (v4, v6 netip.Addr, err error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return v4, v6, fmt.Errorf("public IP %q: want at most one IPv4 and one IPv6 address", s)
	}
	for _, part := range parts {
		a, perr := netip.ParseAddr(strings.TrimSpace(part))
		if perr != nil {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("public IP %q: %v", part, perr)
		}
		dst := &v6
		if a.Is4() {
			dst = &v4
		}
		if dst.IsValid() {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("public IP %q: two addresses of one family", s)
		}
		*dst = a
	}
	return v4, v6, nil
}

// ErrHeld is returned by Reserve when another node holds the subnet.
var ErrHeld = errors.New("subnet is held by another node")

// ErrNotFound is returned by Release when the subnet has no key.
var ErrNotFound = errors.New("no lease or reservation")

// Reserve writes a reservation of the IPv4 subnet sn for publicIP; see
// ReserveSubnets.
func Reserve(ctx context.Context, c clientv3.KV, prefix string, sn netip.Prefix, publicIP netip.Addr) (string, error) {
	return ReserveSubnets(ctx, c, prefix, Subnets{V4: sn}, publicIP, netip.Addr{})
}

// ReserveSubnets writes a reservation of sn for the node with the given
// public addresses under prefix: a lease key with no etcd lease, which
// agents never expire and which that node takes (in etcd a node is its
// PublicIP, or its PublicIPv6 in an IPv6-only network). sn must hold a
// subnet of each family the config has on, and the node an address of each.
// A subnet leased by the same node becomes a reservation keeping its
// attributes (so its peers keep their routes); a subnet of either family
// held by another key is refused.
func ReserveSubnets(ctx context.Context, c clientv3.KV, prefix string, sn Subnets, ip4, ip6 netip.Addr) (string, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	resp, err := c.Get(ctx, prefix+"/config")
	if err != nil {
		return "", fmt.Errorf("reading %s/config: %w", prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("no network config at %s/config", prefix)
	}
	cfg, _, err := subnet.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return "", fmt.Errorf("network config at %s/config: %w", prefix, err)
	}
	if cfg.EnableIPv4 {
		if !ip4.Is4() || !subnet.IsUsableUnicast(ip4) {
			return "", fmt.Errorf("public IP %s: want a unicast IPv4 address", ip4)
		}
		if !cfg.Contains(sn.V4) {
			return "", fmt.Errorf("subnet %s is not a /%d inside network %s", sn.V4, cfg.SubnetLen, cfg.Network)
		}
	} else if sn.V4.IsValid() || ip4.IsValid() {
		return "", fmt.Errorf("the network is IPv6-only: give an IPv6 subnet and address only")
	}
	if cfg.EnableIPv6 {
		if !subnet.IsUsableUnicast6(ip6) {
			return "", fmt.Errorf("public IPv6 %v: IPv6 is on; give the node's global IPv6 address too (PUBLIC-IP as 192.0.2.5,2001:db8::5)", ip6)
		}
		if !cfg.ContainsIPv6(sn.V6) {
			return "", fmt.Errorf("IPv6 subnet %v is not a /%d inside IPv6 network %s (IPv6 is on; give SUBNET as 10.244.5.0/24,fd00:10:244:5::/64)", sn.V6, cfg.IPv6SubnetLen, cfg.IPv6Network)
		}
	} else if sn.V6.IsValid() || ip6.IsValid() {
		return "", fmt.Errorf("IPv6 is off in the network config: give an IPv4 subnet and address only")
	}
	key := prefix + "/subnets/" + subnet.SubnetKey(sn.V4, sn.V6)
	attrs := subnet.LeaseAttrs{PublicIP: ip4, BackendType: cfg.BackendType}
	if ip6.IsValid() {
		attrs.PublicIPv6 = &ip6
	}
	// Any key naming one of the subnets: one Get of the prefix.
	all, err := c.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return "", fmt.Errorf("reading %s/subnets/: %w", prefix, err)
	}
	cmp := clientv3.Compare(clientv3.Version(key), "=", 0)
	what := "reserved"
	for _, kv := range all.Kvs {
		v4, v6, perr := subnet.ParseSubnetKey(strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"))
		if string(kv.Key) != key && (perr != nil || (!sn.V4.IsValid() || v4 != sn.V4) && (!sn.V6.IsValid() || v6 != sn.V6)) {
			continue
		}
		old, err := subnet.ParseLeaseAttrs(kv.Value)
		if string(kv.Key) == key && err == nil && old.NodeIP() == attrs.NodeIP() {
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
		return "", fmt.Errorf("%w: %s is held by %s (key %s); release it first (weft leases release %s)", ErrHeld, sn, holder, kv.Key, sn)
	}
	val, err := attrs.Marshal()
	if err != nil {
		return "", err
	}
	tx, err := c.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", key, err)
	}
	if !tx.Succeeded {
		return "", fmt.Errorf("%s changed while reserving it; try again", key)
	}
	return what, nil
}

// Release deletes the lease or reservation holding sn (a subnet of either
// family: the whole key goes, with the node's other subnet) under prefix.
func Release(ctx context.Context, c clientv3.KV, prefix string, sn netip.Prefix) error {
	prefix = strings.TrimSuffix(prefix, "/")
	all, err := c.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("reading %s/subnets/: %w", prefix, err)
	}
	var key string
	for _, kv := range all.Kvs {
		v4, v6, err := subnet.ParseSubnetKey(strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"))
		if err == nil && (v4 == sn || v6 == sn) {
			key = string(kv.Key)
			break
		}
	}
	if key == "" {
		return fmt.Errorf("%w for %s (no key under %s/subnets/ names it)", ErrNotFound, sn, prefix)
	}
	resp, err := c.Delete(ctx, key)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w for %s (%s went meanwhile)", ErrNotFound, sn, key)
	}
	return nil
}
