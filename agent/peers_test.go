package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/subnet"
)

func lease(sn, ip string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`)}}
}

func TestPeerSetApply(t *testing.T) {
	s := newPeerSet()
	own := netip.MustParsePrefix("10.244.1.0/24")
	a, c, r := s.apply([]subnet.Event{
		{Type: subnet.EventAdded, Lease: lease("10.244.1.0/24", "192.0.2.1")},
		{Type: subnet.EventAdded, Lease: lease("10.244.2.0/24", "192.0.2.2")},
		{Type: subnet.EventAdded, Lease: lease("10.244.3.0/24", "192.0.2.3")},
	})
	if len(a) != 3 || len(c) != 0 || len(r) != 0 {
		t.Fatalf("added %d changed %d removed %d", len(a), len(c), len(r))
	}
	if got := s.all(); len(got) != 3 || got[0].Subnet != own || got[1].Subnet.String() != "10.244.2.0/24" {
		t.Fatalf("peers = %v", got)
	}
	// The same lease again changes nothing; a new address is a change.
	a, c, r = s.apply([]subnet.Event{
		{Type: subnet.EventChanged, Lease: lease("10.244.2.0/24", "192.0.2.2")},
		{Type: subnet.EventChanged, Lease: lease("10.244.3.0/24", "192.0.2.33")},
		{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24")}},
	})
	if len(a) != 0 || len(c) != 1 || len(r) != 0 {
		t.Fatalf("added %d changed %d removed %d", len(a), len(c), len(r))
	}
	_, _, r = s.apply([]subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24")}}})
	if len(r) != 1 || r[0].Attrs.PublicIP.String() != "192.0.2.2" {
		t.Fatalf("removed = %v", r)
	}
}

// The final peer set must not depend on the order of independent events.
func TestPeerSetOrderIndependent(t *testing.T) {
	var evs []subnet.Event
	for i := range 50 {
		sn := fmt.Sprintf("10.244.%d.0/24", i+1)
		evs = append(evs, subnet.Event{Type: subnet.EventAdded, Lease: lease(sn, fmt.Sprintf("192.0.2.%d", i+1))})
		if i%3 == 0 {
			evs = append(evs, subnet.Event{Type: subnet.EventChanged, Lease: lease(sn, fmt.Sprintf("192.0.3.%d", i+1))})
		}
	}
	want := dump(t, evs)
	for seed := range uint64(20) {
		// Shuffle while keeping each subnet's own events in order.
		bySubnet := map[netip.Prefix][]subnet.Event{}
		var keys []netip.Prefix
		for _, e := range evs {
			if _, ok := bySubnet[e.Lease.Subnet]; !ok {
				keys = append(keys, e.Lease.Subnet)
			}
			bySubnet[e.Lease.Subnet] = append(bySubnet[e.Lease.Subnet], e)
		}
		r := rand.New(rand.NewPCG(seed, 1))
		var shuffled []subnet.Event
		for len(keys) > 0 {
			i := r.IntN(len(keys))
			k := keys[i]
			shuffled = append(shuffled, bySubnet[k][0])
			bySubnet[k] = bySubnet[k][1:]
			if len(bySubnet[k]) == 0 {
				keys = slices.Delete(keys, i, i+1)
			}
		}
		if got := dump(t, shuffled); got != want {
			t.Fatalf("seed %d: order changed the result", seed)
		}
	}
}

func dump(t *testing.T, evs []subnet.Event) string {
	t.Helper()
	s := newPeerSet()
	// Apply in uneven batches, as the watch would deliver them.
	for len(evs) > 0 {
		n := min(len(evs), 1+len(evs)%7)
		s.apply(evs[:n])
		evs = evs[n:]
	}
	out := ""
	for _, l := range s.all() {
		out += l.Subnet.String() + " " + l.Attrs.PublicIP.String() + "\n"
	}
	return out
}

// Big batches (the first listing, bursts) mixed with small ones: the set
// must stay sorted and complete.
func TestPeerSetBigBatches(t *testing.T) {
	s := newPeerSet()
	var evs []subnet.Event
	for i := range 500 {
		evs = append(evs, subnet.Event{Type: subnet.EventAdded, Lease: lease(fmt.Sprintf("10.%d.%d.0/24", 1+i/250, i%250), "192.0.2.1")})
	}
	if a, _, _ := s.apply(evs[:400]); len(a) != 400 {
		t.Fatalf("added %d", len(a))
	}
	s.apply(evs[400:410])
	var rm []subnet.Event
	for _, e := range evs[:300] {
		rm = append(rm, subnet.Event{Type: subnet.EventRemoved, Lease: e.Lease})
	}
	if _, _, r := s.apply(rm); len(r) != 300 {
		t.Fatalf("removed %d", len(r))
	}
	if a, _, _ := s.apply(evs); len(a) != 390 || s.len() != 500 {
		t.Fatalf("added %d, len %d", len(a), s.len())
	}
	if !slices.IsSortedFunc(s.all(), func(a, b subnet.Lease) int { return cmpSubnet(a, b.Subnet) }) {
		t.Fatal("not sorted")
	}
}

// TestPeerSetMatchesModel applies random events (adds, changes, removals
// of random subnets, in random batches, with all called at random points)
// and checks the set against a map after each batch: the merge of pending
// changes must give exactly the model's leases, sorted.
func TestPeerSetMatchesModel(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 2))
		s := newPeerSet()
		model := map[netip.Prefix]subnet.Lease{}
		for range 200 {
			var evs []subnet.Event
			for range 1 + r.IntN(20) {
				k := 1 + r.IntN(300)
				l := lease(fmt.Sprintf("10.%d.%d.0/24", k/250, k%250), fmt.Sprintf("192.0.2.%d", 1+r.IntN(3)))
				switch r.IntN(3) {
				case 0, 1:
					evs = append(evs, subnet.Event{Type: subnet.EventAdded, Lease: l})
				default:
					evs = append(evs, subnet.Event{Type: subnet.EventRemoved, Lease: l})
				}
			}
			var wantAdded, wantChanged, wantRemoved int
			for _, e := range evs {
				old, had := model[e.Lease.Subnet]
				if e.Type == subnet.EventRemoved {
					if had {
						wantRemoved++
						delete(model, e.Lease.Subnet)
					}
					continue
				}
				switch {
				case !had:
					wantAdded++
				case !old.Attrs.Equal(e.Lease.Attrs):
					wantChanged++
				}
				model[e.Lease.Subnet] = e.Lease
			}
			a, c, rm := s.apply(evs)
			if len(a) != wantAdded || len(c) != wantChanged || len(rm) != wantRemoved {
				t.Fatalf("seed %d: added %d changed %d removed %d, want %d %d %d", seed, len(a), len(c), len(rm), wantAdded, wantChanged, wantRemoved)
			}
			if s.len() != len(model) {
				t.Fatalf("seed %d: len %d, want %d", seed, s.len(), len(model))
			}
			for p := range model {
				if !s.has(p) {
					t.Fatalf("seed %d: has(%v) false before the merge", seed, p)
				}
			}
			if r.IntN(3) > 0 {
				continue // more changes before the backend looks
			}
			got := s.all()
			want := slices.SortedFunc(maps.Values(model), func(a, b subnet.Lease) int { return cmpSubnet(a, b.Subnet) })
			if len(got) != len(want) {
				t.Fatalf("seed %d: all() holds %d leases, want %d", seed, len(got), len(want))
			}
			for i := range want {
				if got[i].Subnet != want[i].Subnet || got[i].Attrs.PublicIP != want[i].Attrs.PublicIP {
					t.Fatalf("seed %d: all()[%d] = %v %v, want %v %v", seed, i, got[i].Subnet, got[i].Attrs.PublicIP, want[i].Subnet, want[i].Attrs.PublicIP)
				}
			}
		}
	}
}

// BenchmarkPeerSetStream streams 1,000 leases of random subnets (as the
// store leases them) onto a set of N, merging every perSet events as the
// agent does once per Set; ns/op is per lease. A cost that does not grow
// with N is flat from 1,000 to 20,000 at a given perSet.
func BenchmarkPeerSetStream(b *testing.B) {
	for _, perSet := range []int{1, 20} {
		for _, n := range []int{1000, 5000, 20000} {
			b.Run(fmt.Sprintf("perSet=%d/peers=%d", perSet, n), func(b *testing.B) {
				perm := rand.New(rand.NewPCG(1, 1)).Perm(65000)
				at := func(k int) subnet.Lease {
					k = perm[k] + 1
					return lease(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24).String(), "192.0.2.1")
				}
				const more = 1000
				stream := make([]subnet.Event, more)
				drop := make([]subnet.Event, more)
				for i := range more {
					stream[i] = subnet.Event{Type: subnet.EventAdded, Lease: at(n + i)}
					drop[i] = subnet.Event{Type: subnet.EventRemoved, Lease: stream[i].Lease}
				}
				s := newPeerSet()
				var base []subnet.Event
				for i := range n {
					base = append(base, subnet.Event{Type: subnet.EventAdded, Lease: at(i)})
				}
				s.apply(base)
				s.all()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					k := i % more
					s.apply(stream[k : k+1])
					if (i+1)%perSet == 0 || k == more-1 {
						s.all()
					}
					if k == more-1 {
						b.StopTimer()
						s.apply(drop)
						s.all()
						b.StartTimer()
					}
				}
			})
		}
	}
}

// A set grown by many merges holds spare room; compact gives it back and
// keeps the leases.
func TestPeerSetCompact(t *testing.T) {
	s := newPeerSet()
	add := func(k int) {
		s.apply([]subnet.Event{{Type: subnet.EventAdded, Lease: lease(fmt.Sprintf("10.%d.%d.0/24", k>>8, k&255), "192.0.2.1")}})
	}
	for k := range 1000 {
		add(k)
	}
	s.all()
	for k := 1000; k < 1300; k++ {
		add(k)
		s.all() // one merge per lease, as a stream of Sets does
	}
	before := slices.Clone(s.all())
	if spare := cap(s.sorted) - len(s.sorted); spare <= len(s.sorted)/16 {
		t.Fatalf("spare room %d after merges: the test does not grow the slice by merges", spare)
	}
	s.compact()
	if spare := cap(s.sorted) - len(s.sorted); spare > len(s.sorted)/16 {
		t.Errorf("spare room %d of %d after compact", spare, len(s.sorted))
	}
	if got := s.all(); !slices.EqualFunc(got, before, func(a, b subnet.Lease) bool { return a.Subnet == b.Subnet && a.Attrs.Equal(b.Attrs) }) {
		t.Errorf("compact changed the set: %d leases, want %d", len(got), len(before))
	}
}
