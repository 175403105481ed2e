package netlinkx

import (
	"cmp"
	"iter"
	"maps"
	"net/netip"
	"slices"
)

// ChangeKind says how the kernel differs from the desired entries at one
// key.
type ChangeKind string

// The kinds of changes a Plan lists.
const (
	// Missing: the entry is desired and absent; Sync would add it.
	Missing ChangeKind = "missing"
	// Extra: the entry is the programmer's (by ownership) but not desired;
	// Sync would delete it.
	Extra ChangeKind = "extra"
	// Stale: an entry with the key exists with other values; Sync would
	// replace it.
	Stale ChangeKind = "stale"
)

// Change is one entry that Sync would write or delete.
type Change struct {
	Kind ChangeKind
	// Object is "neighbour", "fdb" or "route".
	Object string
	// Key identifies the entry: the neighbour's address, the FDB entry's
	// MAC, the route's destination.
	Key string
	// Want and Have describe the desired and the kernel's entry ("" when
	// absent).
	Want, Have string
}

// String describes the change in one line, e.g. "missing fdb
// 02:42:0a:f4:07:00: want dst 192.168.1.12".
func (c Change) String() string {
	s := string(c.Kind) + " " + c.Object + " " + c.Key
	switch {
	case c.Want != "" && c.Have != "":
		s += ": have " + c.Have + ", want " + c.Want
	case c.Want != "":
		s += ": want " + c.Want
	case c.Have != "":
		s += ": have " + c.Have
	}
	return s
}

// Plan reads the kernel and returns what Sync(link, want) would change,
// without changing anything or the programmer's memory: the dry run of
// Sync. Entries are compared as Sync compares them (neighbours written
// permanent, routes in the main table), so an empty plan means Sync would
// write nothing. The changes are sorted by object and key.
func (p *Programmer) Plan(link int, want Desired) ([]Change, error) {
	have, err := p.dump(link)
	if err != nil {
		return nil, err
	}
	return diff(have.entries(), want), nil
}

// diff lists the changes that take have to want.
func diff(have Entries, want Desired) []Change {
	var out []Change
	neigh := func(n Neigh) string { return "lladdr " + n.MAC.String() }
	for ip, n := range want.AllNeighs() {
		n.Permanent = true
		cur, ok := have.Neighs[ip]
		switch {
		case !ok:
			out = append(out, Change{Kind: Missing, Object: "neighbour", Key: ip.String(), Want: neigh(n)})
		case cur != n:
			out = append(out, Change{Kind: Stale, Object: "neighbour", Key: ip.String(), Want: neigh(n), Have: neigh(cur)})
		}
	}
	for ip, n := range have.Neighs {
		if _, ok := want.LookupNeigh(ip); !ok {
			out = append(out, Change{Kind: Extra, Object: "neighbour", Key: ip.String(), Have: neigh(n)})
		}
	}
	// FDB entries are keyed by MAC for the report: one MAC with another
	// destination is a stale entry, not a missing and an extra one.
	wantDst, haveDst := fdbByMAC(want.AllFDBs()), fdbByMAC(maps.Keys(have.FDBs))
	for mac, w := range wantDst {
		h := haveDst[mac]
		switch {
		case len(h) == 0:
			out = append(out, Change{Kind: Missing, Object: "fdb", Key: mac.String(), Want: dsts(w)})
		case !slices.Equal(h, w):
			out = append(out, Change{Kind: Stale, Object: "fdb", Key: mac.String(), Want: dsts(w), Have: dsts(h)})
		}
	}
	for mac, h := range haveDst {
		if _, ok := wantDst[mac]; !ok {
			out = append(out, Change{Kind: Extra, Object: "fdb", Key: mac.String(), Have: dsts(h)})
		}
	}
	for dst, r := range want.AllRoutes() {
		r.Table = MainTable
		cur, ok := have.Routes[dst]
		switch {
		case !ok:
			out = append(out, Change{Kind: Missing, Object: "route", Key: dst.String(), Want: r.String()})
		case cur != r:
			out = append(out, Change{Kind: Stale, Object: "route", Key: dst.String(), Want: r.String(), Have: cur.String()})
		}
	}
	for dst, r := range have.Routes {
		if _, ok := want.LookupRoute(dst); !ok {
			out = append(out, Change{Kind: Extra, Object: "route", Key: dst.String(), Have: r.String()})
		}
	}
	slices.SortFunc(out, func(a, b Change) int {
		return cmp.Or(cmp.Compare(a.Object, b.Object), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Kind, b.Kind))
	})
	return out
}

// fdbByMAC groups FDB entries by MAC, with their destinations sorted.
func fdbByMAC(fdbs iter.Seq[FDB]) map[MAC][]netip.Addr {
	m := make(map[MAC][]netip.Addr)
	for f := range fdbs {
		m[f.MAC] = append(m[f.MAC], f.Dst)
	}
	for _, d := range m {
		slices.SortFunc(d, netip.Addr.Compare)
	}
	return m
}

func dsts(d []netip.Addr) string {
	s := "dst"
	for i, a := range d {
		if i > 0 {
			s += ","
		}
		s += " " + a.String()
	}
	return s
}
