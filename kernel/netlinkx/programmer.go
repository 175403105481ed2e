package netlinkx

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Entries is a set of kernel entries: the neighbours and FDB entries of one
// link and a set of routes in one table.
type Entries struct {
	// Neighs is keyed by neighbour address.
	Neighs map[netip.Addr]Neigh
	FDBs   map[FDB]struct{}
	// Routes is keyed by destination.
	Routes map[netip.Prefix]Route
}

// NewEntries returns empty entries with room for n of each kind.
func NewEntries(n int) Entries {
	return Entries{
		Neighs: make(map[netip.Addr]Neigh, n),
		FDBs:   make(map[FDB]struct{}, n),
		Routes: make(map[netip.Prefix]Route, n),
	}
}

func (e Entries) clone() Entries {
	c := NewEntries(max(len(e.Neighs), len(e.Routes)))
	for k, v := range e.Neighs {
		c.Neighs[k] = v
	}
	for k := range e.FDBs {
		c.FDBs[k] = struct{}{}
	}
	for k, v := range e.Routes {
		c.Routes[k] = v
	}
	return c
}

// Stats says what one Sync did.
type Stats struct {
	// Dumped is true when Sync read the kernel state rather than trusting
	// what it had applied before.
	Dumped bool
	// Added and Deleted count the entries written and removed.
	Added, Deleted int
}

// Programmer brings the kernel entries it owns to a desired set. It owns
// every neighbour and FDB entry of its link and the main-table routes that
// its ownsRoute function accepts; it never touches anything else.
//
// It remembers what it applied, so that a Sync after a single peer change
// writes one entry without reading the kernel. It reads (dumps) the kernel
// when that memory is not trusted: at first, after a failed write, after
// Invalidate, after Observe saw an update that undoes its work, and when
// the last dump is older than the verify period. Sync adds and replaces
// before it deletes: neighbours, then FDB entries, then routes (so the kernel
// never resolves a route's gateway by ARP), then deletes routes, neighbours
// and FDB entries.
//
// Sync must not be called concurrently with itself; Observe and Invalidate
// may be called from any goroutine.
type Programmer struct {
	nl        Interface
	ownsRoute func(r Route, link int) bool
	verify    time.Duration

	mu       sync.Mutex
	link     int
	applied  Entries
	known    bool // applied mirrors the kernel
	gen      uint64
	verified time.Time
}

// NewProgrammer returns a Programmer over nl. ownsRoute reports whether a
// main-table route is the programmer's (given the index of its link, which
// may change over time); verify is the longest time Sync trusts its memory
// of the kernel (0: always dump).
func NewProgrammer(nl Interface, ownsRoute func(r Route, link int) bool, verify time.Duration) *Programmer {
	return &Programmer{nl: nl, ownsRoute: ownsRoute, verify: verify, applied: NewEntries(0)}
}

// Invalidate makes the next Sync read the kernel state.
func (p *Programmer) Invalidate() {
	p.mu.Lock()
	p.known = false
	p.gen++
	p.mu.Unlock()
}

// Observe looks at one update and reports whether it changed entries the
// programmer owns away from what it applied (then the next Sync reads the
// kernel). Echoes of the programmer's own writes report false.
func (p *Programmer) Observe(u Update) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	dirty := false
	switch u.Kind {
	case LostUpdates:
		dirty = true
	case LinkUpdate:
		dirty = u.Deleted && p.link != 0 && u.Link.Index == p.link
	case NeighUpdate:
		if p.link == 0 || u.Neigh.LinkIndex != p.link {
			break
		}
		cur, ok := p.applied.Neighs[u.Neigh.IP]
		if u.Deleted {
			dirty = ok
		} else {
			dirty = (ok && cur != u.Neigh) || (!ok && u.Neigh.Permanent)
		}
	case FDBUpdate:
		if p.link == 0 || u.FDB.LinkIndex != p.link {
			break
		}
		_, ok := p.applied.FDBs[u.FDB]
		dirty = u.Deleted == ok
	case RouteUpdate:
		r := u.Route
		if !r.Dst.IsValid() || r.table() != MainTable || !p.ownsRoute(r, p.link) {
			break
		}
		r.Table = MainTable
		cur, ok := p.applied.Routes[r.Dst]
		if u.Deleted {
			dirty = ok && cur == r
		} else {
			dirty = !ok || cur != r
		}
	}
	if dirty {
		p.known = false
		p.gen++
	}
	return dirty
}

// Delta names the keys at which the desired entries may differ from those
// of the previous Sync or SyncDelta. A key may be named more than once.
type Delta struct {
	Neighs []netip.Addr
	FDBs   []FDB
	Routes []netip.Prefix
}

// Len returns how many keys d names.
func (d *Delta) Len() int { return len(d.Neighs) + len(d.FDBs) + len(d.Routes) }

// Reset empties d, keeping its storage.
func (d *Delta) Reset() {
	d.Neighs, d.FDBs, d.Routes = d.Neighs[:0], d.FDBs[:0], d.Routes[:0]
}

// Sync makes the kernel entries owned by the programmer equal want; link is
// the index of the device whose neighbours and FDB entries it owns (0:
// none). Entries that fail to be written are reported in the returned error
// (one line each) and do not stop the others; a route whose gateway's
// neighbour or FDB entry failed is not written.
func (p *Programmer) Sync(link int, want Entries) (Stats, error) {
	return p.sync(link, want, nil)
}

// SyncDelta is Sync for a caller that keeps want from call to call and
// knows where it changed: d must name every key at which want differs from
// the want of the previous Sync or SyncDelta. While the programmer trusts
// its memory (the previous call succeeded, nothing foreign happened since,
// and no verification is due) only the keys in d are compared, so that one
// peer change costs a few map lookups whatever the number of entries;
// otherwise it is Sync(link, want). Either way, afterwards the kernel
// matches the whole of want.
func (p *Programmer) SyncDelta(link int, want Entries, d *Delta) (Stats, error) {
	return p.sync(link, want, d)
}

func (p *Programmer) sync(link int, want Entries, d *Delta) (Stats, error) {
	var st Stats
	p.mu.Lock()
	if link != p.link {
		p.link = link
		p.known = false
	}
	full := !p.known || p.verify <= 0 || time.Since(p.verified) >= p.verify
	gen := p.gen
	p.mu.Unlock()

	start := time.Now()
	if full {
		actual, err := p.dump(link)
		if err != nil {
			p.Invalidate()
			return st, err
		}
		st.Dumped = true
		p.mu.Lock()
		p.applied = actual
		p.mu.Unlock()
		d = nil
	}
	p.mu.Lock()
	have := p.applied
	p.mu.Unlock()

	// The keys to compare: all of want and have, or those of the delta.
	neighKeys, fdbKeys, routeKeys := maps.Keys(want.Neighs), maps.Keys(want.FDBs), maps.Keys(want.Routes)
	if d != nil {
		neighKeys, fdbKeys, routeKeys = slices.Values(d.Neighs), slices.Values(d.FDBs), slices.Values(d.Routes)
	}

	var errs []error
	// Adds and replacements, in the order that keeps the kernel from ARPing.
	failedGw := map[netip.Addr]bool{}
	skipped := 0 // wanted routes absent from have
	for ip := range neighKeys {
		n, ok := want.Neighs[ip]
		if !ok {
			continue
		}
		n.Permanent = true
		if cur, ok := have.Neighs[ip]; ok && cur == n {
			continue
		}
		p.record(func(e Entries) { e.Neighs[ip] = n })
		if err := p.nl.SetNeigh(n); err != nil {
			errs = append(errs, err)
			failedGw[ip] = true
			continue
		}
		st.Added++
	}
	for f := range fdbKeys {
		if _, ok := want.FDBs[f]; !ok {
			continue
		}
		if _, ok := have.FDBs[f]; ok {
			continue
		}
		p.record(func(e Entries) { e.FDBs[f] = struct{}{} })
		if err := p.nl.SetFDB(f); err != nil {
			errs = append(errs, err)
			for ip, n := range want.Neighs {
				if n.MAC == f.MAC {
					failedGw[ip] = true
				}
			}
			continue
		}
		st.Added++
	}
	for dst := range routeKeys {
		r, ok := want.Routes[dst]
		if !ok {
			continue
		}
		r.Table = MainTable
		if cur, ok := have.Routes[dst]; ok && cur == r {
			continue
		}
		if r.OnLink && failedGw[r.Gw] {
			errs = append(errs, fmt.Errorf("route %s not written: the neighbour or FDB entry for %s failed", dst, r.Gw))
			if _, ok := have.Routes[dst]; !ok {
				skipped++
			}
			continue
		}
		p.record(func(e Entries) { e.Routes[dst] = r })
		if err := p.nl.ReplaceRoute(r); err != nil {
			errs = append(errs, err)
			continue
		}
		st.Added++
	}
	// Deletions. In a full pass have now holds every wanted key, so equal
	// sizes mean there is nothing to delete (the common case, which skips
	// a walk).
	routeKeys, neighKeys, fdbKeys = maps.Keys(extra(have.Routes, len(want.Routes)-skipped)),
		maps.Keys(extra(have.Neighs, len(want.Neighs))), maps.Keys(extra(have.FDBs, len(want.FDBs)))
	if d != nil {
		neighKeys, fdbKeys, routeKeys = slices.Values(d.Neighs), slices.Values(d.FDBs), slices.Values(d.Routes)
	}
	for dst := range routeKeys {
		if _, ok := want.Routes[dst]; ok {
			continue
		}
		r, ok := have.Routes[dst]
		if !ok {
			continue
		}
		p.record(func(e Entries) { delete(e.Routes, dst) })
		if err := p.nl.DeleteRoute(r); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		st.Deleted++
	}
	for ip := range neighKeys {
		if _, ok := want.Neighs[ip]; ok {
			continue
		}
		n, ok := have.Neighs[ip]
		if !ok {
			continue
		}
		p.record(func(e Entries) { delete(e.Neighs, ip) })
		if err := p.nl.DeleteNeigh(n); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		st.Deleted++
	}
	for f := range fdbKeys {
		if _, ok := want.FDBs[f]; ok {
			continue
		}
		if _, ok := have.FDBs[f]; !ok {
			continue
		}
		p.record(func(e Entries) { delete(e.FDBs, f) })
		if err := p.nl.DeleteFDB(f); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		st.Deleted++
	}

	p.mu.Lock()
	if len(errs) > 0 || p.gen != gen {
		// A write failed, or someone changed our entries meanwhile: the
		// memory is not to be trusted.
		p.known = false
	} else {
		p.known = true
		if full {
			p.verified = start
		}
	}
	p.mu.Unlock()
	slices.SortFunc(errs, func(a, b error) int { return cmp.Compare(a.Error(), b.Error()) })
	return st, errors.Join(errs...)
}

// record changes the applied entries before the matching write, so that
// Observe recognises the write's echo.
func (p *Programmer) record(f func(Entries)) {
	p.mu.Lock()
	f(p.applied)
	p.mu.Unlock()
}

func (p *Programmer) dump(link int) (Entries, error) {
	var e Entries
	var neighs []Neigh
	var fdbs []FDB
	var err error
	if link != 0 {
		if neighs, err = p.nl.Neighs(link); err != nil {
			return e, err
		}
		if fdbs, err = p.nl.FDBs(link); err != nil {
			return e, err
		}
	}
	routes, err := p.nl.Routes(MainTable, 0)
	if err != nil {
		return e, err
	}
	e = NewEntries(max(len(neighs), len(routes)))
	for _, n := range neighs {
		if n.Permanent {
			e.Neighs[n.IP] = n
		}
	}
	for _, f := range fdbs {
		e.FDBs[f] = struct{}{}
	}
	for _, r := range routes {
		r.Table = MainTable
		if p.ownsRoute(r, link) {
			if _, dup := e.Routes[r.Dst]; dup {
				// Two routes to one destination (different metrics): the
				// second is not one we wrote; remove it by resyncing later.
				continue
			}
			e.Routes[r.Dst] = r
		}
	}
	return e, nil
}

// Applied returns a copy of the entries the programmer believes the kernel
// holds.
func (p *Programmer) Applied() Entries {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied.clone()
}

// extra returns have, or nil when it holds no more than the wanted entries
// it is known to contain (after the adds, every wanted key that was not
// skipped), so that there is nothing to delete.
func extra[K comparable, V any](have map[K]V, wanted int) map[K]V {
	if len(have) <= wanted {
		return nil
	}
	return have
}
