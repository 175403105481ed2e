package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidLease is wrapped by every error about a lease key or value that
// cannot be used as a peer.
var ErrInvalidLease = errors.New("invalid lease")

// LeaseAttrs is the JSON value of a lease key, field for field and byte for
// byte as flannel v0.28.9 writes it (json.Marshal of lease.LeaseAttrs,
// pkg/lease/lease.go, in pkg/subnet/etcd/registry.go: createSubnet):
//
//	{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
type LeaseAttrs struct {
	PublicIP      netip.Addr      `json:"PublicIP"`
	PublicIPv6    *netip.Addr     `json:"PublicIPv6"`
	BackendType   string          `json:"BackendType,omitempty"`
	BackendData   json.RawMessage `json:"BackendData,omitempty"`
	BackendV6Data json.RawMessage `json:"BackendV6Data,omitempty"`
}

// Marshal encodes the attributes as flanneld does (compact JSON, no newline).
func (a LeaseAttrs) Marshal() ([]byte, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encoding lease attributes: %w", err)
	}
	return b, nil
}

// Equal reports whether two attribute sets advertise the same thing.
func (a LeaseAttrs) Equal(o LeaseAttrs) bool {
	v6 := func(p *netip.Addr) netip.Addr {
		if p == nil {
			return netip.Addr{}
		}
		return *p
	}
	return a.PublicIP == o.PublicIP && v6(a.PublicIPv6) == v6(o.PublicIPv6) &&
		a.BackendType == o.BackendType && jsonEqual(a.BackendData, o.BackendData) &&
		jsonEqual(a.BackendV6Data, o.BackendV6Data)
}

// ParseLeaseAttrs decodes a lease value. It checks the JSON shape only; see
// ValidateLease for the checks that make it usable as a peer.
func ParseLeaseAttrs(data []byte) (LeaseAttrs, error) {
	var a LeaseAttrs
	if err := json.Unmarshal(data, &a); err != nil {
		return LeaseAttrs{}, fmt.Errorf("%w: value %s: %s", ErrInvalidLease, quoteJSON(data), describeJSONError(err, data))
	}
	return a, nil
}

// Lease is one node's hold on a subnet, as read from or written to etcd.
type Lease struct {
	// Subnet is the leased IPv4 subnet, e.g. 10.244.3.0/24.
	Subnet netip.Prefix
	// IPv6Subnet is the leased IPv6 subnet of a dual-stack lease, or zero.
	IPv6Subnet netip.Prefix
	Attrs      LeaseAttrs
	// EtcdLease is the etcd lease ID the key is bound to; 0 means the key
	// has no etcd lease: an operator's reservation that never expires.
	EtcdLease int64
	// Expiration is when the etcd lease runs out if not renewed (zero for a
	// reservation, or when not known).
	Expiration time.Time
	// ModRevision is the etcd revision of the key's last change.
	ModRevision int64
}

// Reserved reports whether the lease is an operator's reservation (a key
// with no etcd lease).
func (l *Lease) Reserved() bool { return l.EtcdLease == 0 }

// Key returns the lease's key below <prefix>/subnets/.
func (l *Lease) Key() string { return SubnetKey(l.Subnet, l.IPv6Subnet) }

// SubnetKey returns the key name flannel uses for a lease: "10.244.3.0-24",
// or "10.244.3.0-24&fd00:0:0:3::-64" for a dual-stack lease.
func SubnetKey(v4, v6 netip.Prefix) string {
	var b strings.Builder
	if v4.IsValid() {
		b.WriteString(v4.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(v4.Bits()))
	}
	if v6.IsValid() {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(v6.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(v6.Bits()))
	}
	return b.String()
}

// ParseSubnetKey parses a key name written by SubnetKey (the part after
// <prefix>/subnets/).
func ParseSubnetKey(key string) (v4, v6 netip.Prefix, err error) {
	parts := strings.Split(key, "&")
	if len(parts) > 2 {
		return v4, v6, fmt.Errorf("%w: key %q: want \"<ip>-<len>\" or \"<ipv4>-<len>&<ipv6>-<len>\"", ErrInvalidLease, key)
	}
	for _, part := range parts {
		i := strings.LastIndexByte(part, '-')
		if i < 0 {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q: %q has no \"-<len>\" suffix", ErrInvalidLease, key, part)
		}
		p, perr := netip.ParsePrefix(part[:i] + "/" + part[i+1:])
		if perr != nil || p.Masked() != p || p.Addr().Zone() != "" {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q: %q is not a subnet", ErrInvalidLease, key, part)
		}
		if p.Addr().Is4() {
			if v4.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q names two IPv4 subnets", ErrInvalidLease, key)
			}
			v4 = p
		} else {
			if v6.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q names two IPv6 subnets", ErrInvalidLease, key)
			}
			v6 = p
		}
	}
	return v4, v6, nil
}

// DataValidator checks a lease's backend data for a backend type; the agent
// builds one from the backend registry. It is called only for leases whose
// BackendType matches the config's.
type DataValidator func(backendType string, data json.RawMessage) error

// ValidateLease checks that a lease read from etcd can be used as a peer:
// its subnet lies inside the network with the configured length, its
// PublicIP is a unicast IPv4 address, its BackendType is the configured one,
// and validate (if not nil) accepts its backend data. The error names the
// key and the reason.
func (c *Config) ValidateLease(l *Lease, validate DataValidator) error {
	key := l.Key()
	if !l.Subnet.IsValid() {
		return fmt.Errorf("%w: key %q has no IPv4 subnet", ErrInvalidLease, key)
	}
	if !c.Contains(l.Subnet) {
		return fmt.Errorf("%w: key %q: subnet %s is not a /%d inside network %s", ErrInvalidLease, key, l.Subnet, c.SubnetLen, c.Network)
	}
	ip := l.Attrs.PublicIP
	if !ip.IsValid() {
		return fmt.Errorf("%w: key %q: PublicIP is missing", ErrInvalidLease, key)
	}
	if !ip.Is4() || !IsUsableUnicast(ip) {
		return fmt.Errorf("%w: key %q: PublicIP %s is not a unicast IPv4 address", ErrInvalidLease, key, ip)
	}
	if l.Attrs.BackendType != c.BackendType {
		return fmt.Errorf("%w: key %q: BackendType %q, but the network uses %q", ErrInvalidLease, key, l.Attrs.BackendType, c.BackendType)
	}
	if validate != nil {
		if err := validate(l.Attrs.BackendType, l.Attrs.BackendData); err != nil {
			return fmt.Errorf("%w: key %q: BackendData %s: %w", ErrInvalidLease, key, quoteJSON(bytes.TrimSpace(l.Attrs.BackendData)), err)
		}
	}
	return nil
}

// IsUsableUnicast reports whether a can be a node's public address: valid
// and neither unspecified, loopback (no peer can reach another node's
// loopback), multicast nor the IPv4 broadcast address.
func IsUsableUnicast(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return false
	}
	if a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	return true
}

// EventType says what happened to a lease.
type EventType int

// The kinds of lease events.
const (
	// EventAdded: a lease appeared (or was first seen in a snapshot).
	EventAdded EventType = iota + 1
	// EventChanged: a known lease's attributes changed.
	EventChanged
	// EventRemoved: a lease was deleted, expired, or became invalid.
	EventRemoved
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "added"
	case EventChanged:
		return "changed"
	case EventRemoved:
		return "removed"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one validated change to the set of leases. For EventRemoved only
// Lease.Subnet (and IPv6Subnet) are meaningful.
type Event struct {
	Type  EventType
	Lease Lease
}
