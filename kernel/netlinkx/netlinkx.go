// Package netlinkx is the narrow netlink seam of the data plane: the few
// link, address, neighbour, FDB and route operations that the backends need,
// expressed with net/netip values. Handle implements it over a netlink socket
// bound to one network namespace (dumps interrupted by concurrent changes are
// retried in one place); Fake implements it in memory and dumps its whole
// state as sorted text for golden tests.
//
// The package also holds Programmer, the reconcile engine the backends share:
// it diffs desired entries against what it last applied (or, when that is
// unknown, against a kernel dump), adds before deleting, and recognises
// netlink updates that undo its work.
package netlinkx

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrNotFound is wrapped by errors about a link or entry that does not exist.
var ErrNotFound = errors.New("not found")

// MainTable is the kernel's main routing table (RT_TABLE_MAIN).
const MainTable = 254

// MAC is an Ethernet address; unlike net.HardwareAddr it is comparable.
type MAC [6]byte

// ParseMAC parses a colon-separated Ethernet address such as
// "02:42:ac:11:00:02".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("parsing MAC address %q: want six colon-separated hex bytes such as \"02:42:ac:11:00:02\"", s)
	}
	return MAC(hw), nil
}

// MACFrom converts a net.HardwareAddr; ok is false unless it has 6 bytes.
func MACFrom(hw net.HardwareAddr) (m MAC, ok bool) {
	if len(hw) != 6 {
		return MAC{}, false
	}
	return MAC(hw), true
}

// String formats m as "02:42:ac:11:00:02".
func (m MAC) String() string {
	var b [17]byte
	for i, c := range m {
		if i > 0 {
			b[3*i-1] = ':'
		}
		hex.Encode(b[3*i:3*i+2], []byte{c})
	}
	return string(b[:])
}

// HardwareAddr converts m for the netlink boundary.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsUnicast reports whether m is a non-zero unicast address (the
// group bit of the first octet clear).
func (m MAC) IsUnicast() bool { return !m.IsZero() && m[0]&0x01 == 0 }

// VXLAN holds the attributes of a VXLAN device that the backends set.
type VXLAN struct {
	// VNI is the VXLAN network identifier.
	VNI int
	// Port is the UDP destination port.
	Port int
	// Local is the source address of encapsulated packets.
	Local netip.Addr
	// VtepDevIndex is the index of the underlay link the device is bound to.
	VtepDevIndex int
	// GBP enables the Group Based Policy extension.
	GBP bool
	// Learning enables source-address learning (the backends keep it off).
	Learning bool
}

// Link is a network interface.
type Link struct {
	Index int
	Name  string
	// Type is the kernel's link kind ("vxlan", "veth", "bridge", ...).
	Type string
	MTU  int
	MAC  MAC
	// Up reports whether the link is administratively up.
	Up bool
	// VXLAN is set for VXLAN devices only.
	VXLAN *VXLAN
}

// NewVXLAN describes a VXLAN device to create.
type NewVXLAN struct {
	Name string
	MTU  int
	MAC  MAC
	VXLAN
}

// Neigh is a neighbour entry: ARP for an IPv4 address, NDP for IPv6.
type Neigh struct {
	LinkIndex int
	IP        netip.Addr
	MAC       MAC
	// Permanent is NUD_PERMANENT; SetNeigh always writes permanent entries.
	Permanent bool
}

// FDB is a forwarding database entry of a VXLAN device (neighbour of family
// AF_BRIDGE, flag "self"): frames for MAC are sent to Dst.
type FDB struct {
	LinkIndex int
	MAC       MAC
	Dst       netip.Addr
}

// Route is a unicast route (IPv4 or IPv6) with a single next hop.
type Route struct {
	// Table is the routing table; 0 means MainTable.
	Table     int
	Dst       netip.Prefix
	Gw        netip.Addr
	LinkIndex int
	// OnLink is the onlink next-hop flag: the gateway is taken to be
	// directly reachable on the link whatever its addresses.
	OnLink bool
}

// UpdateKind says what an Update is about.
type UpdateKind uint8

// The kinds of updates.
const (
	// LinkUpdate: Update.Link changed or was deleted.
	LinkUpdate UpdateKind = iota + 1
	// NeighUpdate: Update.Neigh changed or was deleted.
	NeighUpdate
	// FDBUpdate: Update.FDB changed or was deleted.
	FDBUpdate
	// RouteUpdate: Update.Route changed or was deleted.
	RouteUpdate
	// LostUpdates: updates may have been lost (socket overrun or error,
	// described by Update.Err); the receiver should assume anything changed.
	LostUpdates
)

// Update is one change notification from the kernel.
type Update struct {
	Kind    UpdateKind
	Deleted bool
	Link    Link
	Neigh   Neigh
	FDB     FDB
	Route   Route
	Err     error
}

// Interface is the set of netlink operations the backends use. Every method
// acts on the namespace the implementation is bound to. Deleting an entry
// that does not exist returns an error wrapping ErrNotFound.
type Interface interface {
	// LinkByName returns the named link or an error wrapping ErrNotFound.
	LinkByName(name string) (Link, error)
	// AddVXLAN creates a VXLAN device and returns it (not yet up).
	AddVXLAN(v NewVXLAN) (Link, error)
	// DeleteLink deletes the link with the given index.
	DeleteLink(index int) error
	// SetLinkUp brings the link up.
	SetLinkUp(index int) error
	// SetLinkMTU sets the link's MTU.
	SetLinkMTU(index, mtu int) error

	// Addrs lists the link's addresses (IPv4 and IPv6, link-local ones
	// included) with their prefix lengths.
	Addrs(index int) ([]netip.Prefix, error)
	// AddAddr adds an address to the link.
	AddAddr(index int, p netip.Prefix) error
	// DeleteAddr removes an address from the link.
	DeleteAddr(index int, p netip.Prefix) error

	// Neighs lists the IPv4 (ARP) and IPv6 (NDP) neighbours of the link.
	Neighs(index int) ([]Neigh, error)
	// SetNeigh creates or replaces a permanent neighbour entry.
	SetNeigh(n Neigh) error
	// DeleteNeigh deletes the neighbour entry for n.LinkIndex and n.IP.
	DeleteNeigh(n Neigh) error

	// FDBs lists the link's forwarding database entries with a destination.
	FDBs(index int) ([]FDB, error)
	// SetFDB creates or replaces the permanent entry for f.MAC, sending its
	// frames to f.Dst (bridge fdb replace): a unicast MAC has one
	// destination, and a new one replaces the old. (An append would leave
	// the old one in place: the kernel appends destinations only to
	// multicast and all-zeros entries.)
	SetFDB(f FDB) error
	// DeleteFDB deletes the entry for f.MAC and f.Dst. Like the kernel, it
	// returns nil and changes nothing when f.MAC has another destination
	// (the entry was replaced), and ErrNotFound when f.MAC has none.
	DeleteFDB(f FDB) error

	// Routes lists the IPv4 and IPv6 unicast routes of table (0: main)
	// whose first next hop is on link index (0: any link).
	Routes(table, index int) ([]Route, error)
	// ReplaceRoute creates or replaces the route to r.Dst in r.Table.
	ReplaceRoute(r Route) error
	// DeleteRoute deletes the route to r.Dst in r.Table.
	DeleteRoute(r Route) error

	// Apply performs ops in order, each as the matching single call above
	// would, and returns the failed ones in the order of their Index
	// (none: nil). A failed op does not
	// stop the ones after it. It is how many entries are written at once:
	// Handle sends them to the kernel in a few messages rather than one
	// request and one answer per entry.
	Apply(ops []Op) []OpError

	// Subscribe sends link, neighbour, FDB and route updates on the
	// returned channel until ctx ends; the channel is closed once every
	// goroutine the subscription started has returned.
	Subscribe(ctx context.Context) (<-chan Update, error)
}

// OpKind names the write an Op performs.
type OpKind uint8

// The writes Apply performs: those of SetNeigh, DeleteNeigh, SetFDB,
// DeleteFDB, ReplaceRoute and DeleteRoute.
const (
	OpSetNeigh OpKind = iota + 1
	OpDeleteNeigh
	OpSetFDB
	OpDeleteFDB
	OpReplaceRoute
	OpDeleteRoute
)

// deletes reports whether k removes an entry.
func (k OpKind) deletes() bool {
	return k == OpDeleteNeigh || k == OpDeleteFDB || k == OpDeleteRoute
}

// Op is one write for Apply: its Kind, and the entry the kind acts on
// (Neigh, FDB or Route; the other two are unused).
type Op struct {
	Kind  OpKind
	Neigh Neigh
	FDB   FDB
	Route Route
}

// OpError is the failure of the op at Index in the slice given to Apply.
// Err is the error the matching single call would have returned.
type OpError struct {
	Index int
	Err   error
}

// applyOne performs op through the single calls of nl.
func applyOne(nl Interface, op Op) error {
	switch op.Kind {
	case OpSetNeigh:
		return nl.SetNeigh(op.Neigh)
	case OpDeleteNeigh:
		return nl.DeleteNeigh(op.Neigh)
	case OpSetFDB:
		return nl.SetFDB(op.FDB)
	case OpDeleteFDB:
		return nl.DeleteFDB(op.FDB)
	case OpReplaceRoute:
		return nl.ReplaceRoute(op.Route)
	case OpDeleteRoute:
		return nl.DeleteRoute(op.Route)
	}
	return fmt.Errorf("netlink write of unknown kind %d", op.Kind)
}

func (r Route) table() int {
	if r.Table == 0 {
		return MainTable
	}
	return r.Table
}

// String formats the route like "ip route".
func (r Route) String() string {
	s := r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += fmt.Sprintf(" dev #%d", r.LinkIndex)
	if r.OnLink {
		s += " onlink"
	}
	if r.table() != MainTable {
		s += fmt.Sprintf(" table %d", r.table())
	}
	return s
}
