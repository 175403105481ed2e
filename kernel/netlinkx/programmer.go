package netlinkx

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Entries is a set of kernel entries: the neighbours and FDB entries of one
// link and a set of routes in one table. It is the plain Desired.
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

// Desired is the set of entries that Sync brings the kernel to: neighbours
// keyed by address, FDB entries, routes keyed by destination. Entries is
// the plain one. A backend that keeps its peers from Set to Set may
// implement it as a view of them instead, so that it does not hold every
// entry twice (its peers and the entries made from them).
type Desired interface {
	// LookupNeigh returns the desired neighbour for ip.
	LookupNeigh(ip netip.Addr) (Neigh, bool)
	// HasFDB reports whether f is desired.
	HasFDB(f FDB) bool
	// LookupRoute returns the desired route to dst.
	LookupRoute(dst netip.Prefix) (Route, bool)
	// AllNeighs, AllFDBs and AllRoutes yield every desired entry, with
	// its key.
	AllNeighs() iter.Seq2[netip.Addr, Neigh]
	AllFDBs() iter.Seq[FDB]
	AllRoutes() iter.Seq2[netip.Prefix, Route]
	// Counts returns how many entries of each kind are desired: exactly
	// as many as the All functions yield.
	Counts() (neighs, fdbs, routes int)
}

var _ Desired = Entries{}

// LookupNeigh implements Desired.
func (e Entries) LookupNeigh(ip netip.Addr) (Neigh, bool) {
	n, ok := e.Neighs[ip]
	return n, ok
}

// HasFDB implements Desired.
func (e Entries) HasFDB(f FDB) bool {
	_, ok := e.FDBs[f]
	return ok
}

// LookupRoute implements Desired.
func (e Entries) LookupRoute(dst netip.Prefix) (Route, bool) {
	r, ok := e.Routes[dst]
	return r, ok
}

// AllNeighs implements Desired.
func (e Entries) AllNeighs() iter.Seq2[netip.Addr, Neigh] { return maps.All(e.Neighs) }

// AllFDBs implements Desired.
func (e Entries) AllFDBs() iter.Seq[FDB] { return maps.Keys(e.FDBs) }

// AllRoutes implements Desired.
func (e Entries) AllRoutes() iter.Seq2[netip.Prefix, Route] { return maps.All(e.Routes) }

// Counts implements Desired.
func (e Entries) Counts() (neighs, fdbs, routes int) {
	return len(e.Neighs), len(e.FDBs), len(e.Routes)
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
// It remembers what it applied (compactly, see memory), so that a Sync after a single peer change
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
	applied  *memory
	known    bool // applied mirrors the kernel
	gen      uint64
	verified time.Time
}

// NewProgrammer returns a Programmer over nl. ownsRoute reports whether a
// main-table route is the programmer's (given the index of its link, which
// may change over time); verify is the longest time Sync trusts its memory
// of the kernel (0: always dump).
func NewProgrammer(nl Interface, ownsRoute func(r Route, link int) bool, verify time.Duration) *Programmer {
	return &Programmer{nl: nl, ownsRoute: ownsRoute, verify: verify, applied: newMemory(0)}
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
		cur, ok := p.applied.neigh(u.Neigh.IP)
		if u.Deleted {
			dirty = ok
		} else {
			dirty = (ok && cur != u.Neigh) || (!ok && u.Neigh.Permanent)
		}
	case FDBUpdate:
		if p.link == 0 || u.FDB.LinkIndex != p.link {
			break
		}
		dirty = u.Deleted == p.applied.hasFDB(u.FDB)
	case RouteUpdate:
		r := u.Route
		if !r.Dst.IsValid() || r.table() != MainTable || !p.ownsRoute(r, p.link) {
			break
		}
		r.Table = MainTable
		cur, ok := p.applied.route(r.Dst)
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

// deltaKeep is the most keys of a kind whose storage Reset keeps.
const deltaKeep = 256

// Reset empties d. It keeps its storage for the next changes, unless a big
// change (a full derivation, a burst) grew it: that is let go, so that it
// does not stay allocated for the life of the caller.
func (d *Delta) Reset() {
	d.Neighs, d.FDBs, d.Routes = reset(d.Neighs), reset(d.FDBs), reset(d.Routes)
}

func reset[T any](s []T) []T {
	if cap(s) > deltaKeep {
		return nil
	}
	return s[:0]
}

// Sync makes the kernel entries owned by the programmer equal want; link is
// the index of the device whose neighbours and FDB entries it owns (0:
// none). Entries that fail to be written are reported in the returned error
// (one line each) and do not stop the others; a route whose gateway's
// neighbour or FDB entry failed is not written.
func (p *Programmer) Sync(link int, want Desired) (Stats, error) {
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
func (p *Programmer) SyncDelta(link int, want Desired, d *Delta) (Stats, error) {
	return p.sync(link, want, d)
}

func (p *Programmer) sync(link int, want Desired, d *Delta) (Stats, error) {
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

	// Each step compares one key; the keys are all of want (and, for
	// deletions, of have) or those of the delta. The writes are queued and
	// go to the kernel in batches (Interface.Apply), in the order queued.
	var errs []error
	failedGw := map[netip.Addr]bool{}
	q := opQueue{nl: p.nl, done: func(op Op, err error) {
		switch {
		case op.Kind.deletes() && (err == nil || errors.Is(err, ErrNotFound)):
			st.Deleted++ // an entry already gone is deleted too
		case err == nil:
			st.Added++
		default:
			errs = append(errs, err)
			// A route through a gateway whose neighbour or FDB entry
			// failed is not written.
			switch op.Kind {
			case OpSetNeigh:
				failedGw[op.Neigh.IP] = true
			case OpSetFDB:
				for ip, n := range want.AllNeighs() {
					if n.MAC == op.FDB.MAC {
						failedGw[ip] = true
					}
				}
			}
		}
	}}
	// Adds and replacements, in the order that keeps the kernel from ARPing.
	skipped := 0 // wanted routes absent from have
	addNeigh := func(ip netip.Addr, n Neigh) {
		n.Permanent = true
		if cur, ok := have.neigh(ip); ok && cur == n {
			return
		}
		p.record(func(m *memory) { m.setNeigh(ip, n) })
		q.add(Op{Kind: OpSetNeigh, Neigh: n})
	}
	addFDB := func(f FDB) {
		if have.hasFDB(f) {
			return
		}
		p.record(func(m *memory) { m.addFDB(f) })
		q.add(Op{Kind: OpSetFDB, FDB: f})
	}
	addRoute := func(dst netip.Prefix, r Route) {
		r.Table = MainTable
		cur, ok := have.route(dst)
		if ok && cur == r {
			return
		}
		if r.OnLink && failedGw[r.Gw] {
			errs = append(errs, fmt.Errorf("route %s not written: the neighbour or FDB entry for %s failed", dst, r.Gw))
			if !ok {
				skipped++
			}
			return
		}
		p.record(func(m *memory) { m.setRoute(dst, r) })
		q.add(Op{Kind: OpReplaceRoute, Route: r})
	}
	if d == nil {
		for ip, n := range want.AllNeighs() {
			addNeigh(ip, n)
		}
		for f := range want.AllFDBs() {
			addFDB(f)
		}
		// Every neighbour and FDB entry is written (or known failed)
		// before the first route.
		q.flush()
		for dst, r := range want.AllRoutes() {
			addRoute(dst, r)
		}
	} else {
		for _, ip := range d.Neighs {
			if n, ok := want.LookupNeigh(ip); ok {
				addNeigh(ip, n)
			}
		}
		for _, f := range d.FDBs {
			if want.HasFDB(f) {
				addFDB(f)
			}
		}
		q.flush()
		for _, dst := range d.Routes {
			if r, ok := want.LookupRoute(dst); ok {
				addRoute(dst, r)
			}
		}
	}
	q.flush()

	// Deletions: routes, then neighbours, then FDB entries.
	delRoute := func(dst netip.Prefix) {
		if _, ok := want.LookupRoute(dst); ok {
			return
		}
		r, ok := have.route(dst)
		if !ok {
			return
		}
		p.record(func(m *memory) { m.deleteRoute(dst) })
		q.add(Op{Kind: OpDeleteRoute, Route: r})
	}
	delNeigh := func(ip netip.Addr) {
		if _, ok := want.LookupNeigh(ip); ok {
			return
		}
		n, ok := have.neigh(ip)
		if !ok {
			return
		}
		p.record(func(m *memory) { m.deleteNeigh(ip) })
		q.add(Op{Kind: OpDeleteNeigh, Neigh: n})
	}
	delFDB := func(f FDB) {
		if want.HasFDB(f) || !have.hasFDB(f) {
			return
		}
		p.record(func(m *memory) { m.deleteFDB(f) })
		q.add(Op{Kind: OpDeleteFDB, FDB: f})
	}
	if d == nil {
		// In a full pass have now holds every wanted key, so equal sizes
		// mean there is nothing to delete (the common case, which skips a
		// walk).
		wantNeighs, wantFDBs, wantRoutes := want.Counts()
		if have.numRoutes() > wantRoutes-skipped {
			for dst := range have.allRoutes() {
				delRoute(dst)
			}
		}
		if have.numNeighs() > wantNeighs {
			for ip := range have.allNeighs() {
				delNeigh(ip)
			}
		}
		if have.numFDBs() > wantFDBs {
			for f := range have.allFDBs() {
				delFDB(f)
			}
		}
	} else {
		for _, dst := range d.Routes {
			delRoute(dst)
		}
		for _, ip := range d.Neighs {
			delNeigh(ip)
		}
		for _, f := range d.FDBs {
			delFDB(f)
		}
	}
	q.flush()

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

// opQueue collects writes and hands them to Interface.Apply in batches,
// then reports each one's outcome to done (err nil: written).
type opQueue struct {
	nl   Interface
	done func(op Op, err error)
	ops  []Op
}

// queueMax is the most writes an opQueue holds before it applies them.
const queueMax = 256

func (q *opQueue) add(op Op) {
	q.ops = append(q.ops, op)
	if len(q.ops) >= queueMax {
		q.flush()
	}
}

// flush applies the queued writes and empties the queue.
func (q *opQueue) flush() {
	if len(q.ops) == 0 {
		return
	}
	errs := q.nl.Apply(q.ops)
	for i, op := range q.ops {
		var err error
		if len(errs) > 0 && errs[0].Index == i {
			err, errs = errs[0].Err, errs[1:]
		}
		q.done(op, err)
	}
	q.ops = q.ops[:0]
}

// record changes the applied entries before the matching write, so that
// Observe recognises the write's echo.
func (p *Programmer) record(f func(*memory)) {
	p.mu.Lock()
	f(p.applied)
	p.mu.Unlock()
}

func (p *Programmer) dump(link int) (*memory, error) {
	var neighs []Neigh
	var fdbs []FDB
	var err error
	if link != 0 {
		if neighs, err = p.nl.Neighs(link); err != nil {
			return nil, err
		}
		if fdbs, err = p.nl.FDBs(link); err != nil {
			return nil, err
		}
	}
	routes, err := p.nl.Routes(MainTable, 0)
	if err != nil {
		return nil, err
	}
	m := newMemory(max(len(neighs), len(routes)))
	for _, n := range neighs {
		if n.Permanent {
			m.setNeigh(n.IP, n)
		}
	}
	for _, f := range fdbs {
		m.addFDB(f)
	}
	for _, r := range routes {
		r.Table = MainTable
		if p.ownsRoute(r, link) {
			if _, dup := m.route(r.Dst); dup {
				// Two routes to one destination (different metrics): the
				// second is not one we wrote; remove it by resyncing later.
				continue
			}
			m.setRoute(r.Dst, r)
		}
	}
	return m, nil
}

// Applied returns a copy of the entries the programmer believes the kernel
// holds.
func (p *Programmer) Applied() Entries {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied.entries()
}
