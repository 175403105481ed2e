package agent

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/subnet"
)

// peerSet folds lease events into the current set of leases, kept sorted
// by subnet: the agent hands the slice itself to the backend, so that one
// lease event costs a binary search and a copy within the slice, not a
// sort of every peer. It is owned by the agent's reconcile goroutine; it is
// not safe for concurrent use.
type peerSet struct {
	sorted []subnet.Lease
}

// bigBatch is the batch size above which apply folds events into a map and
// sorts once, rather than inserting into the sorted slice one by one.
const bigBatch = 64

func newPeerSet() *peerSet { return &peerSet{} }

func cmpSubnet(l subnet.Lease, p netip.Prefix) int {
	if c := l.Primary().Addr().Compare(p.Addr()); c != 0 {
		return c
	}
	return l.Primary().Bits() - p.Bits()
}

// apply folds events into the set and returns the leases added, changed
// and removed (events that change nothing are not counted).
func (s *peerSet) apply(events []subnet.Event) (added, changed, removed []subnet.Lease) {
	if len(events) > bigBatch {
		return s.applyMany(events)
	}
	for _, ev := range events {
		key := ev.Lease.Primary()
		i, had := slices.BinarySearchFunc(s.sorted, key, cmpSubnet)
		switch ev.Type {
		case subnet.EventAdded, subnet.EventChanged:
			switch {
			case !had:
				s.sorted = slices.Insert(s.sorted, i, ev.Lease)
				added = append(added, ev.Lease)
			case !s.sorted[i].Attrs.Equal(ev.Lease.Attrs):
				s.sorted[i] = ev.Lease
				changed = append(changed, ev.Lease)
			default:
				s.sorted[i] = ev.Lease
			}
		case subnet.EventRemoved:
			if had {
				removed = append(removed, s.sorted[i])
				s.sorted = slices.Delete(s.sorted, i, i+1)
			}
		}
	}
	return added, changed, removed
}

// applyMany is apply for a large batch (the first listing, a burst).
func (s *peerSet) applyMany(events []subnet.Event) (added, changed, removed []subnet.Lease) {
	m := make(map[netip.Prefix]subnet.Lease, len(s.sorted)+len(events))
	for _, l := range s.sorted {
		m[l.Primary()] = l
	}
	for _, ev := range events {
		key := ev.Lease.Primary()
		old, had := m[key]
		switch ev.Type {
		case subnet.EventAdded, subnet.EventChanged:
			m[key] = ev.Lease
			switch {
			case !had:
				added = append(added, ev.Lease)
			case !old.Attrs.Equal(ev.Lease.Attrs):
				changed = append(changed, ev.Lease)
			}
		case subnet.EventRemoved:
			if had {
				delete(m, key)
				removed = append(removed, old)
			}
		}
	}
	old := s.sorted
	out := old[:0]
	if cap(old) < len(m) {
		out = make([]subnet.Lease, 0, len(m))
	}
	for _, l := range m {
		out = append(out, l)
	}
	if len(out) < len(old) {
		clear(old[len(out):]) // drop the references a shrunk set leaves behind
	}
	slices.SortFunc(out, func(a, b subnet.Lease) int { return cmpSubnet(a, b.Primary()) })
	s.sorted = out
	return added, changed, removed
}

// all returns every lease, own included, sorted by subnet. The slice is the
// set's own: valid until the next apply, and not to be modified.
func (s *peerSet) all() []subnet.Lease { return s.sorted }

// has reports whether the set holds a lease for p.
func (s *peerSet) has(p netip.Prefix) bool {
	_, ok := slices.BinarySearchFunc(s.sorted, p, cmpSubnet)
	return ok
}

func (s *peerSet) len() int { return len(s.sorted) }
