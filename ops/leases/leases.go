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
	PublicIPv6 string `json:"publicIPv6,omitempty"`
	Backend    string `json:"backendType,omitempty"`
	VtepMAC    string `json:"vtepMAC,omitempty"`
	VtepMACv6  string `json:"vtepMACv6,omitempty"`
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
	// Value is the raw stored value (in Kubernetes mode, the lease
	// attributes the Node's annotations describe).
	Value json.RawMessage `json:"value"`
	// Node is the Node's name in Kubernetes mode.
	Node string `json:"node,omitempty"`
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
	// Kube is true for the leases of a Kubernetes-mode cluster (Nodes);
	// OtherNodes counts the Nodes that are not flannel nodes.
	Kube       bool `json:"kube,omitempty"`
	OtherNodes int  `json:"otherNodes,omitempty"`
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
		if ls.Config.EnableIPv4 {
			rep.Network = ls.Config.Network.String()
		}
		if ls.Config.EnableIPv6 {
			rep.IPv6Network = ls.Config.IPv6Network.String()
		}
		rep.BackendType = ls.Config.BackendType
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
	if v6 := l.Attrs.IPv6(); v6.IsValid() {
		r.PublicIPv6 = v6.String()
	}
	r.Backend = l.Attrs.BackendType
	r.VtepMAC, r.VtepMACv6 = vtepMAC(l.Attrs.BackendData), vtepMAC(l.Attrs.BackendV6Data)
	r.PublicKey = wireguardData(l.Attrs.BackendData)
	if r.PublicKey == "" {
		r.PublicKey = wireguardData(l.Attrs.BackendV6Data)
	}
	r.Engine = engineOf(l.Attrs.BackendData, l.Attrs.BackendV6Data)
	if r.Engine == "" && r.Backend != "" {
		r.Engine = "kernel"
	}
	return r
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

// wireguardData returns the PublicKey of a wireguard lease's data, or "".
func wireguardData(data json.RawMessage) string {
	var bd struct {
		PublicKey string `json:"PublicKey"`
	}
	if len(data) > 0 && json.Unmarshal(data, &bd) == nil {
		return bd.PublicKey
	}
	return ""
}

// engineOf returns the Engine a Weft wireguard node writes in its lease
// data (either family's), or "".
func engineOf(datas ...json.RawMessage) string {
	for _, data := range datas {
		var bd struct {
			Engine string `json:"Engine"`
		}
		if len(data) > 0 && json.Unmarshal(data, &bd) == nil && bd.Engine != "" {
			return bd.Engine
		}
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
	case r.Node != "":
		return "with its Node"
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
	case rep.Kube:
		fmt.Fprintln(tw, kubeHeader(rep))
		if rep.ConfigError != "" {
			fmt.Fprintf(tw, "network config: %s\n", rep.ConfigError)
		}
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
	node := ""
	if rep.Kube {
		node = "NODE\t"
	}
	fmt.Fprintln(tw, node+"SUBNET\tPUBLIC IP\tBACKEND\tENGINE\tVTEP MAC / PUBLIC KEY\tEXPIRES IN\tVALID")
	for _, r := range rep.Leases {
		if rep.Kube {
			fmt.Fprintf(tw, "%s\t", r.Node)
		}
		subnet := strings.TrimSpace(r.Subnet + " " + r.IPv6Subnet)
		if subnet == "" && !rep.Kube {
			subnet = r.Key
		}
		subnet = dash(subnet)
		pub := strings.TrimSpace(r.PublicIP + " " + r.PublicIPv6)
		mac := strings.TrimSpace(r.VtepMAC + " " + r.VtepMACv6)
		valid := "ok"
		if rep.Kube && rep.ConfigError != "" {
			valid = "?"
		}
		if r.Invalid != "" {
			valid = "INVALID: " + r.Invalid
		}
		id := mac
		if id == "" {
			id = r.PublicKey
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", subnet, dash(pub), dash(r.Backend), dash(r.Engine), dash(id), FormatExpiry(r), valid)
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
