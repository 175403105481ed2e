package netlinkx_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/kernel/netlinkx"
)

// Apply sends its ops in batches of a limited size: failures on both sides
// of a batch boundary keep their index, the ops after a failure are
// written, and each error says what the single call would have said.
func TestApplyAcrossBatches(t *testing.T) {
	_, h := underlayNS(t, "nlxa")
	eth0 := env{h}.idx("eth0")

	const n = 300
	bad := []int{0, 127, 128, 255, 256, 299} // on a link that does not exist
	neigh := func(i int) netlinkx.Neigh {
		return netlinkx.Neigh{LinkIndex: eth0, IP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), MAC: macB}
	}
	set := make([]netlinkx.Op, n)
	for i := range set {
		nb := neigh(i)
		if slices.Contains(bad, i) {
			nb.LinkIndex = 9999
		}
		set[i] = netlinkx.Op{Kind: netlinkx.OpSetNeigh, Neigh: nb}
	}
	errs := h.Apply(set)
	var idx []int
	for _, e := range errs {
		idx = append(idx, e.Index)
		if !errors.Is(e.Err, netlinkx.ErrNotFound) || !strings.HasPrefix(e.Err.Error(), "setting neighbour "+neigh(e.Index).IP.String()+" ") {
			t.Errorf("op %d: error %q, want one about setting neighbour %s, wrapping ErrNotFound", e.Index, e.Err, neigh(e.Index).IP)
		}
	}
	if !slices.Equal(idx, bad) {
		t.Fatalf("failed ops %v, want %v", idx, bad)
	}
	got, err := h.Neighs(eth0)
	if err != nil {
		t.Fatal(err)
	}
	if perm := slices.DeleteFunc(got, func(nb netlinkx.Neigh) bool { return !nb.Permanent }); len(perm) != n-len(bad) {
		t.Fatalf("%d permanent neighbours on eth0 after the batch, want %d", len(perm), n-len(bad))
	}

	// Deleting all: the never-written ones are not found, the others go.
	del := make([]netlinkx.Op, n)
	for i := range del {
		del[i] = netlinkx.Op{Kind: netlinkx.OpDeleteNeigh, Neigh: neigh(i)}
	}
	idx = idx[:0]
	for _, e := range h.Apply(del) {
		idx = append(idx, e.Index)
		if !errors.Is(e.Err, netlinkx.ErrNotFound) {
			t.Errorf("deleting op %d: %v, want ErrNotFound", e.Index, e.Err)
		}
	}
	if !slices.Equal(idx, bad) {
		t.Fatalf("failed deletions %v, want %v", idx, bad)
	}
	if got, _ := h.Neighs(eth0); slices.ContainsFunc(got, func(nb netlinkx.Neigh) bool { return nb.Permanent }) {
		t.Fatalf("permanent neighbours left on eth0: %v", got)
	}

	// The kernel's own words come with its errno.
	err = h.ReplaceRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.2.0.0/24"), Gw: far, LinkIndex: eth0})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "gateway") {
		t.Errorf("route through a gateway off eth0's prefixes: %v, want the kernel's message about the gateway", err)
	}
	t.Logf("the kernel's refusal: %v", err)
}
