package netlinkx

import (
	"iter"
	"net/netip"
)

// memory is the Programmer's record of the entries it believes the kernel
// holds, in a compact form: with thousands of peers it is one of the
// agent's largest structures. Its keys and values hold no pointers (the
// garbage collector does not scan them) and leave out what every recorded
// entry shares: a recorded neighbour is permanent, and a recorded route is
// in the main table. Addresses lose their zone, which kernel entries never
// have.
//
// Per entry it takes about half of what maps of Neigh, FDB and Route do: 32
// bytes for a neighbour (64), 28 for an FDB entry (40), 44 for a route
// (112).
type memory struct {
	neighs map[addrKey]neighVal
	fdbs   map[fdbKey]struct{}
	routes map[prefixKey]routeVal
}

// addrKey is a netip.Addr without its zone: the 16-byte form and the
// family (0 for the zero Addr, 4 or 6).
type addrKey struct {
	b   [16]byte
	fam uint8
}

func packAddr(a netip.Addr) addrKey {
	switch {
	case a.Is4():
		return addrKey{b: a.As16(), fam: 4}
	case a.Is6():
		return addrKey{b: a.As16(), fam: 6}
	}
	return addrKey{}
}

func (k addrKey) addr() netip.Addr {
	switch k.fam {
	case 4:
		return netip.AddrFrom16(k.b).Unmap()
	case 6:
		return netip.AddrFrom16(k.b)
	}
	return netip.Addr{}
}

// prefixKey is a netip.Prefix: its address and its length plus one (0 for
// the zero Prefix).
type prefixKey struct {
	a           addrKey
	bitsPlusOne uint8
}

func packPrefix(p netip.Prefix) prefixKey {
	if !p.IsValid() {
		return prefixKey{}
	}
	return prefixKey{a: packAddr(p.Addr()), bitsPlusOne: uint8(p.Bits() + 1)}
}

func (k prefixKey) prefix() netip.Prefix {
	if k.bitsPlusOne == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(k.a.addr(), int(k.bitsPlusOne)-1)
}

// neighVal is a permanent neighbour entry's value.
type neighVal struct {
	mac  MAC
	link int32
}

type fdbKey struct {
	link int32
	mac  MAC
	dst  addrKey
}

func packFDB(f FDB) fdbKey { return fdbKey{link: int32(f.LinkIndex), mac: f.MAC, dst: packAddr(f.Dst)} }

func (k fdbKey) fdb() FDB { return FDB{LinkIndex: int(k.link), MAC: k.mac, Dst: k.dst.addr()} }

// routeVal is a main-table route's value.
type routeVal struct {
	gw     addrKey
	onLink bool
	link   int32
}

func newMemory(n int) *memory {
	return &memory{
		neighs: make(map[addrKey]neighVal, n),
		fdbs:   make(map[fdbKey]struct{}, n),
		routes: make(map[prefixKey]routeVal, n),
	}
}

// neigh returns the recorded neighbour for ip.
func (m *memory) neigh(ip netip.Addr) (Neigh, bool) {
	v, ok := m.neighs[packAddr(ip)]
	if !ok {
		return Neigh{}, false
	}
	return Neigh{LinkIndex: int(v.link), IP: ip, MAC: v.mac, Permanent: true}, true
}

// setNeigh records n, permanent, for ip.
func (m *memory) setNeigh(ip netip.Addr, n Neigh) {
	m.neighs[packAddr(ip)] = neighVal{mac: n.MAC, link: int32(n.LinkIndex)}
}

func (m *memory) deleteNeigh(ip netip.Addr) { delete(m.neighs, packAddr(ip)) }

func (m *memory) hasFDB(f FDB) bool {
	_, ok := m.fdbs[packFDB(f)]
	return ok
}

func (m *memory) addFDB(f FDB) { m.fdbs[packFDB(f)] = struct{}{} }

func (m *memory) deleteFDB(f FDB) { delete(m.fdbs, packFDB(f)) }

// route returns the recorded route to dst (in the main table).
func (m *memory) route(dst netip.Prefix) (Route, bool) {
	v, ok := m.routes[packPrefix(dst)]
	if !ok {
		return Route{}, false
	}
	return Route{Table: MainTable, Dst: dst, Gw: v.gw.addr(), LinkIndex: int(v.link), OnLink: v.onLink}, true
}

// setRoute records r, in the main table, for dst.
func (m *memory) setRoute(dst netip.Prefix, r Route) {
	m.routes[packPrefix(dst)] = routeVal{gw: packAddr(r.Gw), onLink: r.OnLink, link: int32(r.LinkIndex)}
}

func (m *memory) deleteRoute(dst netip.Prefix) { delete(m.routes, packPrefix(dst)) }

// The recorded entries, one by one.
func (m *memory) allNeighs() iter.Seq2[netip.Addr, Neigh] {
	return func(yield func(netip.Addr, Neigh) bool) {
		for k, v := range m.neighs {
			ip := k.addr()
			if !yield(ip, Neigh{LinkIndex: int(v.link), IP: ip, MAC: v.mac, Permanent: true}) {
				return
			}
		}
	}
}

func (m *memory) allFDBs() iter.Seq[FDB] {
	return func(yield func(FDB) bool) {
		for k := range m.fdbs {
			if !yield(k.fdb()) {
				return
			}
		}
	}
}

func (m *memory) allRoutes() iter.Seq2[netip.Prefix, Route] {
	return func(yield func(netip.Prefix, Route) bool) {
		for k, v := range m.routes {
			dst := k.prefix()
			if !yield(dst, Route{Table: MainTable, Dst: dst, Gw: v.gw.addr(), LinkIndex: int(v.link), OnLink: v.onLink}) {
				return
			}
		}
	}
}

// entries returns the recorded entries as Entries.
func (m *memory) entries() Entries {
	e := NewEntries(max(len(m.neighs), len(m.routes)))
	for ip, n := range m.allNeighs() {
		e.Neighs[ip] = n
	}
	for f := range m.allFDBs() {
		e.FDBs[f] = struct{}{}
	}
	for dst, r := range m.allRoutes() {
		e.Routes[dst] = r
	}
	return e
}
