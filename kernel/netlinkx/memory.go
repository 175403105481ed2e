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
// have. Entries whose addresses are all IPv4 (the common case) are kept
// with 4-byte addresses, the others with 16-byte ones; an entry is in one
// of the two forms only.
//
// Per IPv4 entry it takes a quarter of what maps of Neigh, FDB and Route
// do: 16 bytes for a neighbour (64), 16 for an FDB entry (40), 20 for a
// route (112); an IPv6 entry takes 32, 28 and 44.
type memory struct {
	neighs4 map[[4]byte]neighVal
	fdbs4   map[fdbKey4]struct{}
	routes4 map[prefixKey4]routeVal4
	neighs  map[addrKey]neighVal
	fdbs    map[fdbKey]struct{}
	routes  map[prefixKey]routeVal
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

// fdbKey4 is an FDB entry with an IPv4 destination.
type fdbKey4 struct {
	link int32
	mac  MAC
	dst  [4]byte
}

// prefixKey4 is an IPv4 prefix (always valid).
type prefixKey4 struct {
	a    [4]byte
	bits uint8
}

// routeVal4 is a main-table route's value with an IPv4 gateway or none.
type routeVal4 struct {
	gw     [4]byte
	hasGw  bool
	onLink bool
	link   int32
}

func newMemory(n int) *memory {
	return &memory{
		neighs4: make(map[[4]byte]neighVal, n),
		fdbs4:   make(map[fdbKey4]struct{}, n),
		routes4: make(map[prefixKey4]routeVal4, n),
		neighs:  make(map[addrKey]neighVal),
		fdbs:    make(map[fdbKey]struct{}),
		routes:  make(map[prefixKey]routeVal),
	}
}

// The numbers of entries of each kind.
func (m *memory) numNeighs() int { return len(m.neighs4) + len(m.neighs) }
func (m *memory) numFDBs() int   { return len(m.fdbs4) + len(m.fdbs) }
func (m *memory) numRoutes() int { return len(m.routes4) + len(m.routes) }

// neigh returns the recorded neighbour for ip.
func (m *memory) neigh(ip netip.Addr) (Neigh, bool) {
	var v neighVal
	var ok bool
	if ip.Is4() {
		v, ok = m.neighs4[ip.As4()]
	} else {
		v, ok = m.neighs[packAddr(ip)]
	}
	if !ok {
		return Neigh{}, false
	}
	return Neigh{LinkIndex: int(v.link), IP: ip, MAC: v.mac, Permanent: true}, true
}

// setNeigh records n, permanent, for ip.
func (m *memory) setNeigh(ip netip.Addr, n Neigh) {
	v := neighVal{mac: n.MAC, link: int32(n.LinkIndex)}
	if ip.Is4() {
		m.neighs4[ip.As4()] = v
	} else {
		m.neighs[packAddr(ip)] = v
	}
}

func (m *memory) deleteNeigh(ip netip.Addr) {
	if ip.Is4() {
		delete(m.neighs4, ip.As4())
	} else {
		delete(m.neighs, packAddr(ip))
	}
}

func (m *memory) hasFDB(f FDB) bool {
	var ok bool
	if f.Dst.Is4() {
		_, ok = m.fdbs4[fdbKey4{link: int32(f.LinkIndex), mac: f.MAC, dst: f.Dst.As4()}]
	} else {
		_, ok = m.fdbs[packFDB(f)]
	}
	return ok
}

func (m *memory) addFDB(f FDB) {
	if f.Dst.Is4() {
		m.fdbs4[fdbKey4{link: int32(f.LinkIndex), mac: f.MAC, dst: f.Dst.As4()}] = struct{}{}
	} else {
		m.fdbs[packFDB(f)] = struct{}{}
	}
}

func (m *memory) deleteFDB(f FDB) {
	if f.Dst.Is4() {
		delete(m.fdbs4, fdbKey4{link: int32(f.LinkIndex), mac: f.MAC, dst: f.Dst.As4()})
	} else {
		delete(m.fdbs, packFDB(f))
	}
}

// route4Key returns the IPv4 form of dst, if it has one.
func route4Key(dst netip.Prefix) (prefixKey4, bool) {
	if !dst.IsValid() || !dst.Addr().Is4() {
		return prefixKey4{}, false
	}
	return prefixKey4{a: dst.Addr().As4(), bits: uint8(dst.Bits())}, true
}

// route returns the recorded route to dst (in the main table).
func (m *memory) route(dst netip.Prefix) (Route, bool) {
	if k, ok := route4Key(dst); ok {
		if v, ok := m.routes4[k]; ok {
			r := Route{Table: MainTable, Dst: dst, LinkIndex: int(v.link), OnLink: v.onLink}
			if v.hasGw {
				r.Gw = netip.AddrFrom4(v.gw)
			}
			return r, true
		}
	}
	v, ok := m.routes[packPrefix(dst)]
	if !ok {
		return Route{}, false
	}
	return Route{Table: MainTable, Dst: dst, Gw: v.gw.addr(), LinkIndex: int(v.link), OnLink: v.onLink}, true
}

// setRoute records r, in the main table, for dst.
func (m *memory) setRoute(dst netip.Prefix, r Route) {
	if k, ok := route4Key(dst); ok && (r.Gw.Is4() || !r.Gw.IsValid()) {
		v := routeVal4{hasGw: r.Gw.IsValid(), onLink: r.OnLink, link: int32(r.LinkIndex)}
		if v.hasGw {
			v.gw = r.Gw.As4()
		}
		m.routes4[k] = v
		delete(m.routes, packPrefix(dst))
		return
	}
	if k, ok := route4Key(dst); ok {
		delete(m.routes4, k)
	}
	m.routes[packPrefix(dst)] = routeVal{gw: packAddr(r.Gw), onLink: r.OnLink, link: int32(r.LinkIndex)}
}

func (m *memory) deleteRoute(dst netip.Prefix) {
	if k, ok := route4Key(dst); ok {
		delete(m.routes4, k)
	}
	delete(m.routes, packPrefix(dst))
}

// The recorded entries, one by one.
func (m *memory) allNeighs() iter.Seq2[netip.Addr, Neigh] {
	return func(yield func(netip.Addr, Neigh) bool) {
		for k, v := range m.neighs4 {
			ip := netip.AddrFrom4(k)
			if !yield(ip, Neigh{LinkIndex: int(v.link), IP: ip, MAC: v.mac, Permanent: true}) {
				return
			}
		}
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
		for k := range m.fdbs4 {
			if !yield(FDB{LinkIndex: int(k.link), MAC: k.mac, Dst: netip.AddrFrom4(k.dst)}) {
				return
			}
		}
		for k := range m.fdbs {
			if !yield(k.fdb()) {
				return
			}
		}
	}
}

func (m *memory) allRoutes() iter.Seq2[netip.Prefix, Route] {
	return func(yield func(netip.Prefix, Route) bool) {
		for k, v := range m.routes4 {
			dst := netip.PrefixFrom(netip.AddrFrom4(k.a), int(k.bits))
			r := Route{Table: MainTable, Dst: dst, LinkIndex: int(v.link), OnLink: v.onLink}
			if v.hasGw {
				r.Gw = netip.AddrFrom4(v.gw)
			}
			if !yield(dst, r) {
				return
			}
		}
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
	e := NewEntries(max(m.numNeighs(), m.numRoutes()))
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
