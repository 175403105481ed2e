package netlinkx

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
)

var _ Interface = (*Fake)(nil)

// Fake is an in-memory Interface for tests. It models the kernel behaviour
// the backends rely on, as the contract test (TestFakeMatchesKernel) checks
// against a real namespace: deleting a link removes its addresses,
// neighbours, FDB entries and routes; a route needs its link up, and a route
// via a gateway that is not onlink needs the gateway inside a prefix of the
// link; an address with a prefix (not /32) on an up link brings the prefix
// route; a route is deleted only if the gateway and link named match; an
// FDB entry for a unicast MAC has one destination, which SetFDB replaces; a
// VXLAN device's MTU is at most its underlay's less 50 (less 70 over IPv6).
// IPv4 and IPv6 entries are kept alike. Dump
// renders the whole state as sorted text. The zero value is not ready: use
// NewFake.
type Fake struct {
	mu        sync.Mutex
	nextIndex int
	links     map[int]*Link
	addrs     map[int][]netip.Prefix
	neighs    map[neighKey]Neigh
	fdbs      map[FDB]struct{}
	routes    map[routeKey]Route
	subs      []chan Update
	writes    int
	// failWrite, if set, is consulted before every write; a non-nil
	// error makes the write fail with it.
	failWrite func(op string, arg any) error
}

type neighKey struct {
	link int
	ip   netip.Addr
}

type routeKey struct {
	table int
	dst   netip.Prefix
}

// NewFake returns an empty Fake with only the loopback link (index 1).
func NewFake() *Fake {
	f := &Fake{
		nextIndex: 2,
		links:     map[int]*Link{1: {Index: 1, Name: "lo", Type: "device", MTU: 65536, Up: true}},
		addrs:     map[int][]netip.Prefix{1: {netip.MustParsePrefix("127.0.0.1/8")}},
		neighs:    map[neighKey]Neigh{},
		fdbs:      map[FDB]struct{}{},
		routes:    map[routeKey]Route{},
	}
	return f
}

// AddLink adds a plain link (e.g. the underlay "eth0") with the given
// addresses and a connected route for each, and returns it.
func (f *Fake) AddLink(name string, mtu int, addrs ...netip.Prefix) Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := &Link{Index: f.nextIndex, Name: name, Type: "veth", MTU: mtu, Up: true, MAC: MAC{0x02, 0xee, 0, 0, 0, byte(f.nextIndex)}}
	f.nextIndex++
	f.links[l.Index] = l
	for _, a := range addrs {
		f.addrs[l.Index] = append(f.addrs[l.Index], a)
		f.routes[routeKey{MainTable, a.Masked()}] = Route{Table: MainTable, Dst: a.Masked(), LinkIndex: l.Index}
	}
	return *l
}

// FailWrites makes every later write consult fn first (nil: writes succeed).
// op is the method name; arg its argument.
func (f *Fake) FailWrites(fn func(op string, arg any) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWrite = fn
}

// Writes returns the number of successful writes so far.
func (f *Fake) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

func (f *Fake) write(op string, arg any) error {
	if f.failWrite != nil {
		if err := f.failWrite(op, arg); err != nil {
			return fmt.Errorf("%s %v: %w", op, arg, err)
		}
	}
	f.writes++
	return nil
}

func (f *Fake) notify(u Update) {
	for _, ch := range f.subs {
		select {
		case ch <- u:
		default:
			// The kernel drops events on an overrun socket and tells the
			// reader so; the fake does the same.
			select {
			case ch <- Update{Kind: LostUpdates, Err: syscall.ENOBUFS}:
			default:
			}
		}
	}
}

// LinkByName implements Interface.
func (f *Fake) LinkByName(name string) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			return cloneLink(l), nil
		}
	}
	return Link{}, fmt.Errorf("looking up link %q: %w", name, ErrNotFound)
}

func cloneLink(l *Link) Link {
	c := *l
	if l.VXLAN != nil {
		v := *l.VXLAN
		c.VXLAN = &v
	}
	return c
}

func (f *Fake) link(index int) (*Link, error) {
	l, ok := f.links[index]
	if !ok {
		return nil, fmt.Errorf("link #%d: %w", index, ErrNotFound)
	}
	return l, nil
}

// AddVXLAN implements Interface.
func (f *Fake) AddVXLAN(v NewVXLAN) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == v.Name {
			return Link{}, fmt.Errorf("creating vxlan device %s: %w", v.Name, syscall.EEXIST)
		}
	}
	if _, err := f.link(v.VtepDevIndex); err != nil {
		return Link{}, fmt.Errorf("creating vxlan device %s: underlay: %w", v.Name, err)
	}
	if err := f.write("AddVXLAN", v); err != nil {
		return Link{}, err
	}
	attrs := v.VXLAN
	// The kernel gives a VXLAN device without an MTU, or with one larger
	// than its underlay carries, the largest that fits.
	mtu := v.MTU
	if maxMTU := f.links[v.VtepDevIndex].MTU - overheadOf(v.VXLAN); mtu == 0 || mtu > maxMTU {
		mtu = maxMTU
	}
	l := &Link{Index: f.nextIndex, Name: v.Name, Type: "vxlan", MTU: mtu, MAC: v.MAC, VXLAN: &attrs}
	f.nextIndex++
	f.links[l.Index] = l
	f.notify(Update{Kind: LinkUpdate, Link: cloneLink(l)})
	return cloneLink(l), nil
}

// DeleteLink implements Interface. Like the kernel, it removes the link's
// addresses, neighbours, FDB entries and routes without a notification for
// each route.
func (f *Fake) DeleteLink(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(index)
	if err != nil {
		return fmt.Errorf("deleting link: %w", err)
	}
	if err := f.write("DeleteLink", index); err != nil {
		return err
	}
	delete(f.links, index)
	delete(f.addrs, index)
	for k := range f.neighs {
		if k.link == index {
			delete(f.neighs, k)
		}
	}
	for k := range f.fdbs {
		if k.LinkIndex == index {
			delete(f.fdbs, k)
		}
	}
	for k, r := range f.routes {
		if r.LinkIndex == index {
			delete(f.routes, k)
		}
	}
	f.notify(Update{Kind: LinkUpdate, Deleted: true, Link: cloneLink(l)})
	return nil
}

// SetLinkUp implements Interface.
func (f *Fake) SetLinkUp(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(index)
	if err != nil {
		return fmt.Errorf("setting link up: %w", err)
	}
	if err := f.write("SetLinkUp", index); err != nil {
		return err
	}
	if !l.Up {
		l.Up = true
		for _, a := range f.addrs[index] {
			f.addPrefixRoute(index, a)
		}
	}
	f.notify(Update{Kind: LinkUpdate, Link: cloneLink(l)})
	return nil
}

// vxlanOverhead is what VXLAN over IPv4 adds to a frame; the kernel caps a
// VXLAN device's MTU at its underlay's less this (vxlan6Overhead over
// IPv6, whose header is 20 bytes longer).
const (
	vxlanOverhead  = 50
	vxlan6Overhead = 70
)

// overheadOf returns what a VXLAN device with attributes v adds.
func overheadOf(v VXLAN) int {
	if v.Local.Is6() {
		return vxlan6Overhead
	}
	return vxlanOverhead
}

// minMTU is the smallest MTU the kernel accepts for an IPv4 link.
const minMTU = 68

// addPrefixRoute adds the route the kernel adds with an address on an up
// link: to the address's prefix, unless it is an IPv4 /32 (IPv6 gets a
// route even for a /128).
func (f *Fake) addPrefixRoute(index int, a netip.Prefix) {
	if a.Addr().Is4() && a.Bits() >= 32 {
		return
	}
	r := Route{Table: MainTable, Dst: a.Masked(), LinkIndex: index}
	f.routes[routeKey{MainTable, r.Dst}] = r
	f.notify(Update{Kind: RouteUpdate, Route: r})
}

// SetLinkMTU implements Interface.
func (f *Fake) SetLinkMTU(index, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(index)
	if err != nil {
		return fmt.Errorf("setting link MTU: %w", err)
	}
	maxMTU := 65535
	if l.VXLAN != nil {
		if lower, ok := f.links[l.VXLAN.VtepDevIndex]; ok {
			maxMTU = lower.MTU - overheadOf(*l.VXLAN)
		}
	}
	if mtu < minMTU || mtu > maxMTU {
		return fmt.Errorf("setting the MTU of link #%d to %d (range %d-%d): %w", index, mtu, minMTU, maxMTU, syscall.EINVAL)
	}
	if err := f.write("SetLinkMTU", mtu); err != nil {
		return err
	}
	l.MTU = mtu
	f.notify(Update{Kind: LinkUpdate, Link: cloneLink(l)})
	return nil
}

// Addrs implements Interface.
func (f *Fake) Addrs(index int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(index); err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	return slices.Clone(f.addrs[index]), nil
}

// AddAddr implements Interface.
func (f *Fake) AddAddr(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(index); err != nil {
		return fmt.Errorf("adding address %s: %w", p, err)
	}
	if slices.Contains(f.addrs[index], p) {
		return fmt.Errorf("adding address %s to link #%d: %w", p, index, syscall.EEXIST)
	}
	if err := f.write("AddAddr", p); err != nil {
		return err
	}
	f.addrs[index] = append(f.addrs[index], p)
	if f.links[index].Up {
		f.addPrefixRoute(index, p)
	}
	return nil
}

// DeleteAddr implements Interface.
func (f *Fake) DeleteAddr(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.addrs[index], p)
	if i < 0 {
		return fmt.Errorf("deleting address %s from link #%d: %w", p, index, ErrNotFound)
	}
	if err := f.write("DeleteAddr", p); err != nil {
		return err
	}
	f.addrs[index] = slices.Delete(f.addrs[index], i, i+1)
	// The prefix route goes with the address, unless another address of
	// the link has the same prefix.
	if p.Bits() < 32 && !slices.ContainsFunc(f.addrs[index], func(o netip.Prefix) bool { return o.Masked() == p.Masked() }) {
		k := routeKey{MainTable, p.Masked()}
		if r, ok := f.routes[k]; ok && r.LinkIndex == index && !r.Gw.IsValid() {
			delete(f.routes, k)
			f.notify(Update{Kind: RouteUpdate, Deleted: true, Route: r})
		}
	}
	return nil
}

// Neighs implements Interface.
func (f *Fake) Neighs(index int) ([]Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Neigh
	for k, n := range f.neighs {
		if k.link == index {
			out = append(out, n)
		}
	}
	return out, nil
}

// SetNeigh implements Interface.
func (f *Fake) SetNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(n.LinkIndex); err != nil {
		return fmt.Errorf("setting neighbour %s: %w", n.IP, err)
	}
	if err := f.write("SetNeigh", n); err != nil {
		return err
	}
	n.Permanent = true
	f.neighs[neighKey{n.LinkIndex, n.IP}] = n
	f.notify(Update{Kind: NeighUpdate, Neigh: n})
	return nil
}

// PutNeigh stores n as is (e.g. a non-permanent entry the kernel learnt),
// without counting a write.
func (f *Fake) PutNeigh(n Neigh) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.neighs[neighKey{n.LinkIndex, n.IP}] = n
}

// DeleteNeigh implements Interface.
func (f *Fake) DeleteNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := neighKey{n.LinkIndex, n.IP}
	old, ok := f.neighs[k]
	if !ok {
		return fmt.Errorf("deleting neighbour %s on link #%d: %w", n.IP, n.LinkIndex, ErrNotFound)
	}
	if err := f.write("DeleteNeigh", n); err != nil {
		return err
	}
	delete(f.neighs, k)
	f.notify(Update{Kind: NeighUpdate, Deleted: true, Neigh: old})
	return nil
}

// FDBs implements Interface.
func (f *Fake) FDBs(index int) ([]FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FDB
	for e := range f.fdbs {
		if e.LinkIndex == index {
			out = append(out, e)
		}
	}
	return out, nil
}

// SetFDB implements Interface. Like the kernel, it replaces the destination
// of a unicast MAC, and refuses to replace that of an existing multicast or
// all-zeros entry.
func (f *Fake) SetFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(e.LinkIndex); err != nil {
		return fmt.Errorf("setting FDB entry %s: %w", e.MAC, err)
	}
	var old []FDB
	for o := range f.fdbs {
		if o.LinkIndex == e.LinkIndex && o.MAC == e.MAC {
			old = append(old, o)
		}
	}
	if len(old) > 0 && !e.MAC.IsUnicast() {
		return fmt.Errorf("setting FDB entry %s dst %s: cannot replace a non-unicast or zero MAC: %w", e.MAC, e.Dst, syscall.EOPNOTSUPP)
	}
	if err := f.write("SetFDB", e); err != nil {
		return err
	}
	for _, o := range old {
		if o != e {
			delete(f.fdbs, o)
			f.notify(Update{Kind: FDBUpdate, Deleted: true, FDB: o})
		}
	}
	f.fdbs[e] = struct{}{}
	f.notify(Update{Kind: FDBUpdate, FDB: e})
	return nil
}

// DeleteFDB implements Interface. Like the kernel, it succeeds without a
// change when the MAC has another destination.
func (f *Fake) DeleteFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, exact := f.fdbs[e]
	other := false
	for o := range f.fdbs {
		other = other || o.LinkIndex == e.LinkIndex && o.MAC == e.MAC
	}
	if !other {
		return fmt.Errorf("deleting FDB entry %s dst %s: %w", e.MAC, e.Dst, ErrNotFound)
	}
	if err := f.write("DeleteFDB", e); err != nil {
		return err
	}
	if !exact {
		return nil
	}
	delete(f.fdbs, e)
	f.notify(Update{Kind: FDBUpdate, Deleted: true, FDB: e})
	return nil
}

// Apply implements Interface: the ops one after the other, through the
// single calls.
func (f *Fake) Apply(ops []Op) []OpError {
	var errs []OpError
	for i, op := range ops {
		if err := applyOne(f, op); err != nil {
			errs = append(errs, OpError{Index: i, Err: err})
		}
	}
	return errs
}

// Routes implements Interface.
func (f *Fake) Routes(table, index int) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if table == 0 {
		table = MainTable
	}
	var out []Route
	for k, r := range f.routes {
		if k.table == table && (index == 0 || r.LinkIndex == index) {
			out = append(out, r)
		}
	}
	return out, nil
}

// ReplaceRoute implements Interface.
func (f *Fake) ReplaceRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Table = r.table()
	l, err := f.link(r.LinkIndex)
	if err != nil {
		return fmt.Errorf("replacing route %s: %w", r, err)
	}
	if !l.Up {
		return fmt.Errorf("replacing route %s: the link is down: %w", r, syscall.ENETDOWN)
	}
	if r.Gw.IsValid() && !r.OnLink && !slices.ContainsFunc(f.addrs[r.LinkIndex], func(p netip.Prefix) bool { return p.Contains(r.Gw) }) {
		return fmt.Errorf("replacing route %s: gateway not on a prefix of the link: %w", r, syscall.ENETUNREACH)
	}
	if err := f.write("ReplaceRoute", r); err != nil {
		return err
	}
	f.routes[routeKey{r.Table, r.Dst}] = r
	f.notify(Update{Kind: RouteUpdate, Route: r})
	return nil
}

// DeleteRoute implements Interface.
func (f *Fake) DeleteRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := routeKey{r.table(), r.Dst}
	old, ok := f.routes[k]
	// Like the kernel, a gateway or link named in r must match.
	if !ok || r.Gw.IsValid() && r.Gw != old.Gw || r.LinkIndex != 0 && r.LinkIndex != old.LinkIndex {
		return fmt.Errorf("deleting route %s: %w", r, ErrNotFound)
	}
	if err := f.write("DeleteRoute", r); err != nil {
		return err
	}
	delete(f.routes, k)
	f.notify(Update{Kind: RouteUpdate, Deleted: true, Route: old})
	return nil
}

// Subscribe implements Interface. Updates that do not fit in the channel's
// buffer are replaced by a LostUpdates update, as with an overrun socket.
func (f *Fake) Subscribe(ctx context.Context) (<-chan Update, error) {
	in := make(chan Update, 1024)
	out := make(chan Update)
	f.mu.Lock()
	f.subs = append(f.subs, in)
	f.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			f.mu.Lock()
			f.subs = slices.DeleteFunc(f.subs, func(c chan Update) bool { return c == in })
			f.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case u := <-in:
				select {
				case out <- u:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Dump renders the whole state as sorted lines, naming links rather than
// numbering them so that a recreated device dumps the same:
//
//	link flannel.1 vxlan mtu 1450 mac 02:... up vni 1 port 8472 local 192.168.0.1 dev eth0 nolearning
//	addr flannel.1 10.244.1.0/32
//	neigh 10.244.2.0 dev flannel.1 lladdr 02:... permanent
//	fdb 02:... dev flannel.1 dst 192.168.0.2
//	route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := func(i int) string {
		if l, ok := f.links[i]; ok {
			return l.Name
		}
		return fmt.Sprintf("#%d", i)
	}
	var lines []string
	for _, l := range f.links {
		s := fmt.Sprintf("link %s %s mtu %d mac %s", l.Name, l.Type, l.MTU, l.MAC)
		if l.Up {
			s += " up"
		}
		if v := l.VXLAN; v != nil {
			s += fmt.Sprintf(" vni %d port %d local %s dev %s", v.VNI, v.Port, v.Local, name(v.VtepDevIndex))
			if !v.Learning {
				s += " nolearning"
			}
			if v.GBP {
				s += " gbp"
			}
		}
		lines = append(lines, s)
		for _, a := range f.addrs[l.Index] {
			lines = append(lines, fmt.Sprintf("addr %s %s", l.Name, a))
		}
	}
	for _, n := range f.neighs {
		s := fmt.Sprintf("neigh %s dev %s lladdr %s", n.IP, name(n.LinkIndex), n.MAC)
		if n.Permanent {
			s += " permanent"
		}
		lines = append(lines, s)
	}
	for e := range f.fdbs {
		lines = append(lines, fmt.Sprintf("fdb %s dev %s dst %s", e.MAC, name(e.LinkIndex), e.Dst))
	}
	for _, r := range f.routes {
		s := "route " + r.Dst.String()
		if r.Gw.IsValid() {
			s += " via " + r.Gw.String()
		}
		s += " dev " + name(r.LinkIndex)
		if r.OnLink {
			s += " onlink"
		}
		if r.Table != MainTable {
			s += fmt.Sprintf(" table %d", r.Table)
		}
		lines = append(lines, s)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}
