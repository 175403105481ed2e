package subnet

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
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
//
// A family the node does not use is absent: PublicIP is the zero Addr (it
// marshals as "0.0.0.0", as flannel's zero IP4 does, and "0.0.0.0" reads
// back as absent), PublicIPv6 is nil (null) and BackendV6Data empty.
type LeaseAttrs struct {
	PublicIP      netip.Addr
	PublicIPv6    *netip.Addr
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// leaseAttrsJSON is LeaseAttrs as it is encoded.
type leaseAttrsJSON struct {
	PublicIP      string          `json:"PublicIP"`
	PublicIPv6    *netip.Addr     `json:"PublicIPv6"`
	BackendType   string          `json:"BackendType,omitempty"`
	BackendData   json.RawMessage `json:"BackendData,omitempty"`
	BackendV6Data json.RawMessage `json:"BackendV6Data,omitempty"`
}

// MarshalJSON implements json.Marshaler with flanneld's encoding.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	j := leaseAttrsJSON{PublicIP: "0.0.0.0", BackendType: a.BackendType, BackendData: a.BackendData, BackendV6Data: a.BackendV6Data}
	if a.PublicIP.IsValid() {
		j.PublicIP = a.PublicIP.String()
	}
	if v6 := a.IPv6(); v6.IsValid() {
		j.PublicIPv6 = &v6
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler: "0.0.0.0", "" or a missing
// PublicIP and a null, empty or "::" PublicIPv6 are absent.
func (a *LeaseAttrs) UnmarshalJSON(data []byte) error {
	var j struct {
		PublicIP      *string         `json:"PublicIP"`
		PublicIPv6    *string         `json:"PublicIPv6"`
		BackendType   string          `json:"BackendType"`
		BackendData   json.RawMessage `json:"BackendData"`
		BackendV6Data json.RawMessage `json:"BackendV6Data"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	out := LeaseAttrs{BackendType: j.BackendType, BackendData: j.BackendData, BackendV6Data: j.BackendV6Data}
	if j.PublicIP != nil && *j.PublicIP != "" {
		ip, err := netip.ParseAddr(*j.PublicIP)
		if err != nil {
			return fmt.Errorf("PublicIP %q is not an IP address", *j.PublicIP)
		}
		if !ip.IsUnspecified() {
			out.PublicIP = ip
		}
	}
	if j.PublicIPv6 != nil && *j.PublicIPv6 != "" {
		ip, err := netip.ParseAddr(*j.PublicIPv6)
		if err != nil {
			return fmt.Errorf("PublicIPv6 %q is not an IP address", *j.PublicIPv6)
		}
		if !ip.IsUnspecified() {
			out.PublicIPv6 = &ip
		}
	}
	*a = out
	return nil
}

// IPv6 returns PublicIPv6, or the zero Addr when it is absent.
func (a LeaseAttrs) IPv6() netip.Addr {
	if a.PublicIPv6 == nil {
		return netip.Addr{}
	}
	return *a.PublicIPv6
}

// FamilySubnet returns the lease's subnet of one family: IPv6Subnet when
// six, else Subnet. Backends that program both families go through it.
func (l *Lease) FamilySubnet(six bool) netip.Prefix {
	if six {
		return l.IPv6Subnet
	}
	return l.Subnet
}

// FamilyPublicIP returns the lease's public address of one family.
func (l *Lease) FamilyPublicIP(six bool) netip.Addr {
	if six {
		return l.Attrs.IPv6()
	}
	return l.Attrs.PublicIP
}

// FamilyBackendData returns the lease's backend data of one family.
func (l *Lease) FamilyBackendData(six bool) json.RawMessage {
	if six {
		return l.Attrs.BackendV6Data
	}
	return l.Attrs.BackendData
}

// NodeIP returns the address that identifies the node in etcd mode: its
// PublicIP, or for an IPv6-only node its PublicIPv6.
func (a LeaseAttrs) NodeIP() netip.Addr {
	if a.PublicIP.IsValid() {
		return a.PublicIP
	}
	return a.IPv6()
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
	return a.PublicIP == o.PublicIP && a.IPv6() == o.IPv6() &&
		a.BackendType == o.BackendType && jsonEqual(a.BackendData, o.BackendData) &&
		jsonEqual(a.BackendV6Data, o.BackendV6Data)
}

// Digest returns a 128-bit digest of what Equal compares, under two seeds:
// Equal attributes have equal digests, and attributes that are not Equal
// have different ones but for a chance of 2^-128. A watcher keeps digests
// rather than whole attributes to tell a changed lease from a rewritten
// one in a sixth of the memory.
func (a LeaseAttrs) Digest(seeds [2]maphash.Seed) [2]uint64 {
	ip, _ := a.PublicIP.MarshalBinary()
	ip6, _ := a.IPv6().MarshalBinary()
	parts := [][]byte{ip, ip6, []byte(a.BackendType), canonicalJSON(a.BackendData), canonicalJSON(a.BackendV6Data)}
	var out [2]uint64
	for i, seed := range seeds {
		var h maphash.Hash
		h.SetSeed(seed)
		for _, p := range parts {
			// Length-prefixed, so that no two sequences of parts run together.
			var n [8]byte
			binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
			h.Write(n[:])
			h.Write(p)
		}
		out[i] = h.Sum64()
	}
	return out
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

// Lease is one node's hold on a subnet, as read from or written to etcd. A
// family the node does not lease is absent: Subnet is the zero Prefix for an
// IPv6-only lease, IPv6Subnet for an IPv4-only one.
type Lease struct {
	// Subnet is the leased IPv4 subnet, e.g. 10.244.3.0/24, if any.
	Subnet netip.Prefix
	// IPv6Subnet is the leased IPv6 subnet, e.g. fd00:0:0:3::/64, if any.
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

// Primary returns the subnet that identifies the lease among its peers:
// the IPv4 subnet, or for an IPv6-only lease the IPv6 subnet.
func (l *Lease) Primary() netip.Prefix {
	if l.Subnet.IsValid() {
		return l.Subnet
	}
	return l.IPv6Subnet
}

// CompareSubnets orders subnets by address, then length: the order of
// backend.State.Peers (by Primary), and of the backends' own lists by
// subnet.
func CompareSubnets(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// noIPv4 is the IPv4 part of an IPv6-only key: flannel's zero IP4Net.
const noIPv4 = "0.0.0.0-0"

// SubnetKey returns the key name flannel uses for a lease (v0.28.9
// pkg/subnet/subnet.go MakeSubnetKey): "10.244.3.0-24", "10.244.3.0-24&
// fd00:0:0:3::-64" for a dual-stack lease, and "0.0.0.0-0&fd00:0:0:3::-64"
// for an IPv6-only one (flannel always writes an IPv4 part; its zero value
// stands for none). Addresses are in Go's canonical form, as flannel's.
func SubnetKey(v4, v6 netip.Prefix) string {
	var b strings.Builder
	if v4.IsValid() {
		b.WriteString(v4.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(v4.Bits()))
	} else {
		b.WriteString(noIPv4)
	}
	if v6.IsValid() {
		b.WriteByte('&')
		b.WriteString(v6.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(v6.Bits()))
	}
	return b.String()
}

// ParseSubnetKey parses a key name as flanneld does (v0.28.9
// pkg/subnet/subnet.go ParseSubnetKey): an IPv4 part, then optionally "&"
// and an IPv6 part. The IPv4 part "0.0.0.0-0" stands for none (an
// IPv6-only lease). Only the canonical form SubnetKey writes is accepted,
// so that a parsed key always names the same etcd key again.
func ParseSubnetKey(key string) (v4, v6 netip.Prefix, err error) {
	bad := func(format string, args ...any) (netip.Prefix, netip.Prefix, error) {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q: %s", ErrInvalidLease, key, fmt.Sprintf(format, args...))
	}
	part4, part6, dual := strings.Cut(key, "&")
	if strings.Contains(part6, "&") {
		return bad("want \"<ipv4>-<len>\" or \"<ipv4>-<len>&<ipv6>-<len>\"")
	}
	parse := func(part string) (netip.Prefix, error) {
		i := strings.LastIndexByte(part, '-')
		if i < 0 {
			return netip.Prefix{}, fmt.Errorf("%q has no \"-<len>\" suffix", part)
		}
		p, perr := netip.ParsePrefix(part[:i] + "/" + part[i+1:])
		if perr != nil || p.Masked() != p || p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a subnet", part)
		}
		return p, nil
	}
	if part4 != noIPv4 {
		p, perr := parse(part4)
		if perr != nil {
			return bad("%v", perr)
		}
		if !p.Addr().Is4() {
			return bad("%q is not an IPv4 subnet (the first part of a key is IPv4; an IPv6-only key starts %q)", part4, noIPv4+"&")
		}
		v4 = p
	} else if !dual {
		return bad("names no subnet")
	}
	if dual {
		p, perr := parse(part6)
		if perr != nil {
			return bad("%v", perr)
		}
		if !p.Addr().Is6() || p.Addr().Is4In6() {
			return bad("%q is not an IPv6 subnet", part6)
		}
		v6 = p
	}
	if c := SubnetKey(v4, v6); c != key {
		return bad("not in canonical form (want %q)", c)
	}
	return v4, v6, nil
}

// DataValidator checks a lease's backend data for a backend type; the agent
// builds one from the backend registry. It is called only for leases whose
// BackendType matches the config's.
type DataValidator func(backendType string, data json.RawMessage) error

// ValidateLease checks that a lease read from etcd can be used as a peer
// under this config, family by family. With IPv4 on, the lease must have an
// IPv4 subnet inside Network of SubnetLen and a unicast IPv4 PublicIP. With
// IPv6 on, an IPv6 part is optional (a node still IPv4-only while the
// cluster turns IPv6 on gets IPv4 entries only) unless IPv4 is off; when
// present it must be an IPv6SubnetLen subnet of IPv6Network with a global
// unicast PublicIPv6, and validate must accept its BackendV6Data. A part of
// a family that is off is ignored. The BackendType must be the configured
// one, and validate (if not nil) must accept BackendData. The error names
// the key and the reason.
func (c *Config) ValidateLease(l *Lease, validate DataValidator) error {
	key := l.Key()
	if c.EnableIPv4 {
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
	}
	v6 := c.EnableIPv6 && (l.IPv6Subnet.IsValid() || !c.EnableIPv4)
	if v6 {
		if !l.IPv6Subnet.IsValid() {
			return fmt.Errorf("%w: key %q has no IPv6 subnet", ErrInvalidLease, key)
		}
		if !c.ContainsIPv6(l.IPv6Subnet) {
			return fmt.Errorf("%w: key %q: IPv6 subnet %s is not a /%d inside IPv6 network %s", ErrInvalidLease, key, l.IPv6Subnet, c.IPv6SubnetLen, c.IPv6Network)
		}
		ip := l.Attrs.IPv6()
		if !ip.IsValid() {
			return fmt.Errorf("%w: key %q: PublicIPv6 is missing", ErrInvalidLease, key)
		}
		if !IsUsableUnicast6(ip) {
			return fmt.Errorf("%w: key %q: PublicIPv6 %s is not a global unicast IPv6 address", ErrInvalidLease, key, ip)
		}
	}
	if l.Attrs.BackendType != c.BackendType {
		return fmt.Errorf("%w: key %q: BackendType %q, but the network uses %q", ErrInvalidLease, key, l.Attrs.BackendType, c.BackendType)
	}
	if validate != nil {
		if c.EnableIPv4 {
			if err := validate(l.Attrs.BackendType, l.Attrs.BackendData); err != nil {
				return fmt.Errorf("%w: key %q: BackendData %s: %w", ErrInvalidLease, key, quoteJSON(bytes.TrimSpace(l.Attrs.BackendData)), err)
			}
		}
		if v6 {
			if err := validate(l.Attrs.BackendType, l.Attrs.BackendV6Data); err != nil {
				return fmt.Errorf("%w: key %q: BackendV6Data %s: %w", ErrInvalidLease, key, quoteJSON(bytes.TrimSpace(l.Attrs.BackendV6Data)), err)
			}
		}
	}
	return nil
}

// IsUsableUnicast6 reports whether a can be a node's public IPv6 address:
// an IPv6 (not IPv4-mapped) address that IsUsableUnicast accepts and that
// is not link-local (a link-local address needs a zone no peer knows).
func IsUsableUnicast6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.Zone() == "" && IsUsableUnicast(a) && !a.IsLinkLocalUnicast()
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
