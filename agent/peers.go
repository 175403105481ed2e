package agent

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/subnet"
)

// peerSet folds lease events into the current set of leases, kept sorted
// by subnet: the agent hands the slice itself to the backend. Events are
// not inserted into the slice one by one — an insertion at a random place
// (subnets are leased at random) moves half the set, a cost per lease that
// grows with the peer set — but gathered as pending changes, which all
// merges into the slice in one pass when the backend needs it: once per Set
// rather than once per lease. It is owned by the agent's reconcile
// goroutine; it is not safe for concurrent use.
type peerSet struct {
	sorted []subnet.Lease
	// pending holds, by primary subnet, the changes not yet merged into
	// sorted: the lease now, or gone for a removal.
	pending map[netip.Prefix]pendingLease
	n       int // leases in the set, pending changes included
}

type pendingLease struct {
	lease subnet.Lease
	gone  bool
}

// smallPending is the size above which the pending map is dropped after a
// merge rather than cleared and kept for the next changes.
const smallPending = 64

func newPeerSet() *peerSet { return &peerSet{pending: make(map[netip.Prefix]pendingLease)} }

func cmpSubnet(l subnet.Lease, p netip.Prefix) int { return subnet.CompareSubnets(l.Primary(), p) }

// lookup returns the lease the set holds for p, pending changes included.
func (s *peerSet) lookup(p netip.Prefix) (subnet.Lease, bool) {
	if pl, ok := s.pending[p]; ok {
		return pl.lease, !pl.gone
	}
	if i, ok := slices.BinarySearchFunc(s.sorted, p, cmpSubnet); ok {
		return s.sorted[i], true
	}
	return subnet.Lease{}, false
}

// apply folds events into the set and returns the leases added, changed
// and removed (events that change nothing are not counted). It costs a map
// update and a binary search per event, whatever the size of the set.
func (s *peerSet) apply(events []subnet.Event) (added, changed, removed []subnet.Lease) {
	if s.pending == nil {
		s.pending = make(map[netip.Prefix]pendingLease, len(events))
	}
	for _, ev := range events {
		key := ev.Lease.Primary()
		old, had := s.lookup(key)
		switch ev.Type {
		case subnet.EventAdded, subnet.EventChanged:
			// Taken even when the attributes are equal: the other fields
			// (revision, expiry) follow the store.
			s.pending[key] = pendingLease{lease: ev.Lease}
			switch {
			case !had:
				added = append(added, ev.Lease)
				s.n++
			case !old.Attrs.Equal(ev.Lease.Attrs):
				changed = append(changed, ev.Lease)
			}
		case subnet.EventRemoved:
			if had {
				s.pending[key] = pendingLease{gone: true}
				removed = append(removed, old)
				s.n--
			}
		}
	}
	return added, changed, removed
}

// all returns every lease, own included, sorted by subnet, after merging
// the pending changes: replacements in place, then one pass that closes
// the gaps of the removals and one, from the end, that opens room for the
// additions, each moving only the leases after the first place it touches.
// The slice is the set's own: valid until the next apply, and not to be
// modified.
func (s *peerSet) all() []subnet.Lease {
	if len(s.pending) == 0 {
		return s.sorted
	}
	keys := slices.SortedFunc(maps.Keys(s.pending), subnet.CompareSubnets)
	var ins []subnet.Lease // additions, in subnet order
	var del []int          // indices of removals in sorted, ascending
	for _, k := range keys {
		pl := s.pending[k]
		i, ok := slices.BinarySearchFunc(s.sorted, k, cmpSubnet)
		switch {
		case ok && pl.gone:
			del = append(del, i)
		case ok:
			s.sorted[i] = pl.lease
		case !pl.gone:
			ins = append(ins, pl.lease)
		}
	}
	if len(del) > 0 {
		old := s.sorted
		w := del[0]
		for j, i := range del {
			next := len(old)
			if j+1 < len(del) {
				next = del[j+1]
			}
			w += copy(old[w:], old[i+1:next])
		}
		clear(old[w:]) // drop the references the shrunk set leaves behind
		s.sorted = old[:w]
	}
	switch {
	case len(ins) == 0:
	case len(s.sorted) == 0:
		s.sorted = ins
	default:
		i, j := len(s.sorted)-1, len(ins)-1
		s.sorted = slices.Grow(s.sorted, len(ins))[:len(s.sorted)+len(ins)]
		for w := len(s.sorted) - 1; j >= 0; w-- {
			if i >= 0 && subnet.CompareSubnets(s.sorted[i].Primary(), ins[j].Primary()) > 0 {
				s.sorted[w] = s.sorted[i]
				i--
			} else {
				s.sorted[w] = ins[j]
				j--
			}
		}
	}
	if len(s.pending) > smallPending {
		// A burst's map (or the first listing's): clearing it would cost
		// a walk of its capacity at every later merge.
		s.pending = nil
	} else {
		clear(s.pending)
	}
	return s.sorted
}

// compact gives the sorted slice back the room that growing it by merges
// left beyond its length (up to a quarter), once changes have stopped.
// Call it between merges only: the slice all returned before is stale.
func (s *peerSet) compact() {
	if cap(s.sorted)-len(s.sorted) > len(s.sorted)/16 {
		s.sorted = slices.Clone(s.sorted)
	}
}

// has reports whether the set holds a lease for p.
func (s *peerSet) has(p netip.Prefix) bool {
	_, ok := s.lookup(p)
	return ok
}

func (s *peerSet) len() int { return s.n }
