package agent

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/subnet"
)

// peerSet folds lease events into the current set of peers. It is owned by
// the agent's reconcile goroutine; it is not safe for concurrent use.
type peerSet struct {
	leases map[netip.Prefix]subnet.Lease
}

func newPeerSet() *peerSet {
	return &peerSet{leases: make(map[netip.Prefix]subnet.Lease)}
}

// apply folds events into the set and returns how many peers were added,
// changed and removed (events that change nothing are not counted).
func (s *peerSet) apply(events []subnet.Event) (added, changed, removed []subnet.Lease) {
	for _, ev := range events {
		key := ev.Lease.Subnet
		old, had := s.leases[key]
		switch ev.Type {
		case subnet.EventAdded, subnet.EventChanged:
			s.leases[key] = ev.Lease
			switch {
			case !had:
				added = append(added, ev.Lease)
			case !old.Attrs.Equal(ev.Lease.Attrs):
				changed = append(changed, ev.Lease)
			}
		case subnet.EventRemoved:
			if had {
				delete(s.leases, key)
				removed = append(removed, old)
			}
		}
	}
	return added, changed, removed
}

// peers returns every lease except own's, sorted by subnet.
func (s *peerSet) peers(own netip.Prefix) []subnet.Lease {
	out := make([]subnet.Lease, 0, len(s.leases))
	for p, l := range s.leases {
		if p != own {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b subnet.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out
}

func (s *peerSet) len() int { return len(s.leases) }
