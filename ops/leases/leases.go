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
	Backend    string `json:"backendType,omitempty"`
	VtepMAC    string `json:"vtepMAC,omitempty"`
	// PublicKey is a wireguard lease's public key.
	PublicKey string `json:"publicKey,omitempty"`
	// Engine is what carries the node's traffic: "userspace" for a Weft
	// wireguard node on wireguard-go, otherwise "kernel" (flanneld's
	// wireguard, vxlan, host-gw).
	Engine string `json:"engine,omitempty"`
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
				rep.Network, rep.BackendType = c.Network.String(), c.BackendType
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
	row.Backend = attrs.BackendType
	var bd struct {
		VtepMAC   string `json:"VtepMAC"`
		PublicKey string `json:"PublicKey"`
		Engine    string `json:"Engine"`
	}
	data := attrs.BackendData
	if len(data) == 0 {
		data = attrs.BackendV6Data
	}
	if len(data) > 0 && json.Unmarshal(data, &bd) == nil {
		row.VtepMAC, row.PublicKey, row.Engine = bd.VtepMAC, bd.PublicKey, bd.Engine
	}
	if row.Engine == "" && row.Backend != "" {
		row.Engine = "kernel"
	}
	return l, row
}

// lessRow orders rows by subnet address, undecodable keys last.
func lessRow(a, b Row) bool {
	pa, ea := netip.ParsePrefix(a.Subnet)
	pb, eb := netip.ParsePrefix(b.Subnet)
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
		fmt.Fprintf(tw, "network %s, backend %s, %d leases under %s/subnets\n", rep.Network, rep.BackendType, len(rep.Leases), rep.Prefix)
	}
	if len(rep.Leases) == 0 {
		return tw.Flush()
	}
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tENGINE\tVTEP MAC / PUBLIC KEY\tEXPIRES IN\tVALID")
	for _, r := range rep.Leases {
		subnet := r.Subnet
		if subnet == "" {
			subnet = r.Key
		}
		if r.IPv6Subnet != "" {
			subnet += " " + r.IPv6Subnet
		}
		valid := "ok"
		if r.Invalid != "" {
			valid = "INVALID: " + r.Invalid
		}
		id := r.VtepMAC
		if id == "" {
			id = r.PublicKey
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", subnet, dash(r.PublicIP), dash(r.Backend), dash(r.Engine), dash(id), FormatExpiry(r), valid)
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

// ParseSubnet accepts a subnet as "10.244.5.0/24" or in key form
// "10.244.5.0-24".
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		v4, v6, kerr := subnet.ParseSubnetKey(s)
		if kerr != nil || v6.IsValid() || !v4.IsValid() {
			return netip.Prefix{}, fmt.Errorf("subnet %q: want e.g. 10.244.5.0/24", s)
		}
		p = v4
	}
	if !p.Addr().Is4() || p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet %q: want an IPv4 subnet base address with its length, e.g. 10.244.5.0/24", s)
	}
	return p, nil
}

// ErrHeld is returned by Reserve when another node holds the subnet.
var ErrHeld = errors.New("subnet is held by another node")

// ErrNotFound is returned by Release when the subnet has no key.
var ErrNotFound = errors.New("no lease or reservation")

// Reserve writes a reservation of sn for publicIP under prefix: a lease key
// with no etcd lease, which agents never expire and which the node with that
// PublicIP takes. sn must be a subnet of the configured network. A subnet
// leased by the same PublicIP becomes a reservation keeping its attributes
// (so its peers keep their routes); one held by another address is refused.
func Reserve(ctx context.Context, c clientv3.KV, prefix string, sn netip.Prefix, publicIP netip.Addr) (string, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	if !publicIP.Is4() || !subnet.IsUsableUnicast(publicIP) {
		return "", fmt.Errorf("public IP %s: want a unicast IPv4 address", publicIP)
	}
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
	if !cfg.Contains(sn) {
		return "", fmt.Errorf("subnet %s is not a /%d inside network %s", sn, cfg.SubnetLen, cfg.Network)
	}
	key := prefix + "/subnets/" + subnet.SubnetKey(sn, netip.Prefix{})
	attrs := subnet.LeaseAttrs{PublicIP: publicIP, BackendType: cfg.BackendType}
	cur, err := c.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	cmp := clientv3.Compare(clientv3.Version(key), "=", 0)
	what := "reserved"
	if len(cur.Kvs) > 0 {
		kv := cur.Kvs[0]
		old, err := subnet.ParseLeaseAttrs(kv.Value)
		if err == nil && old.PublicIP == publicIP {
			if kv.Lease == 0 {
				return "already reserved", nil
			}
			attrs = old // keep the node's backend data
			what = "turned the lease into a reservation"
		} else {
			holder := "an unreadable value"
			if err == nil {
				holder = old.PublicIP.String()
			}
			return "", fmt.Errorf("%w: %s is held by %s; release it first (weft leases release %s)", ErrHeld, sn, holder, sn)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
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

// Release deletes the lease or reservation of sn under prefix.
func Release(ctx context.Context, c clientv3.KV, prefix string, sn netip.Prefix) error {
	prefix = strings.TrimSuffix(prefix, "/")
	key := prefix + "/subnets/" + subnet.SubnetKey(sn, netip.Prefix{})
	resp, err := c.Delete(ctx, key)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w for %s (no key %s)", ErrNotFound, sn, key)
	}
	return nil
}
