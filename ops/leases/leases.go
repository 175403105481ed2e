// Package leases is `weft leases`: it lists the network config and every
// lease, invalid ones included, through the lease store (subnet/etcd, the
// one owner of the key schema) and renders them for a person (a table) or a
// script (JSON). Reservations are written and deleted by the store's
// Reserve and DeleteSubnet.
package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
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

// Store is what `weft leases` needs of the lease store (*etcd.Store): it
// owns the key schema.
type Store interface {
	// Prefix is the store's key prefix, for the report.
	Prefix() string
	// ListLeases reads the config and every lease, invalid ones included.
	ListLeases(ctx context.Context) (*etcd.Listing, error)
}

// Open connects the lease store for `weft leases`: it validates leases as
// the agents do (backend data included) and logs nothing.
func Open(opts etcd.Options) (*etcd.Store, error) {
	opts.ValidatorFor = registry.ValidateData
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return etcd.New(opts)
}

// List reads the config and the leases from the store and turns them into
// rows, sorted by subnet.
func List(ctx context.Context, s Store) (*Report, error) {
	ls, err := s.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Prefix: s.Prefix(), Leases: []Row{}}
	if ls.RawConfig != nil {
		rep.Config = rawOrString(ls.RawConfig)
	}
	if ls.ConfigErr != nil {
		rep.ConfigError = ls.ConfigErr.Error()
	} else {
		rep.Network, rep.BackendType = ls.Config.Network.String(), ls.Config.BackendType
	}
	for _, e := range ls.Entries {
		rep.Leases = append(rep.Leases, row(e))
	}
	sort.SliceStable(rep.Leases, func(i, j int) bool { return lessRow(rep.Leases[i], rep.Leases[j]) })
	return rep, nil
}

// row renders one entry of the listing.
func row(e etcd.Entry) Row {
	l := e.Lease
	r := Row{Key: e.Name, Reservation: l.Reserved(), Value: rawOrString(e.Value)}
	if !l.Reserved() {
		r.EtcdLease = fmt.Sprintf("%x", l.EtcdLease)
		secs := int64(e.TTL / time.Second)
		r.ExpiresInSeconds = &secs
	}
	if e.Invalid != nil {
		r.Invalid = strings.TrimPrefix(e.Invalid.Error(), subnet.ErrInvalidLease.Error()+": ")
	}
	if l.Subnet.IsValid() {
		r.Subnet = l.Subnet.String()
	}
	if l.IPv6Subnet.IsValid() {
		r.IPv6Subnet = l.IPv6Subnet.String()
	}
	if l.Attrs.PublicIP.IsValid() {
		r.PublicIP = l.Attrs.PublicIP.String()
	}
	r.Backend = l.Attrs.BackendType
	var bd struct {
		VtepMAC   string `json:"VtepMAC"`
		PublicKey string `json:"PublicKey"`
		Engine    string `json:"Engine"`
	}
	data := l.Attrs.BackendData
	if len(data) == 0 {
		data = l.Attrs.BackendV6Data
	}
	if len(data) > 0 && json.Unmarshal(data, &bd) == nil {
		r.VtepMAC, r.PublicKey, r.Engine = bd.VtepMAC, bd.PublicKey, bd.Engine
	}
	if r.Engine == "" && r.Backend != "" {
		r.Engine = "kernel"
	}
	return r
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
