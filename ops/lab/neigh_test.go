package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNeighWant(t *testing.T) {
	def := NeighThresh{128, 512, 1024}
	for _, tc := range []struct {
		hosts, pods int
		cur         NeighThresh
		want        NeighThresh
		change      bool
	}{
		{3, 2, def, def, false},
		{10, 2, def, def, false},
		{50, 2, def, NeighThresh{2048, 4096, 8192}, true},
		{50, 2, NeighThresh{4096, 8192, 16384}, NeighThresh{4096, 8192, 16384}, false},
		{50, 2, NeighThresh{3000, 512, 1024}, NeighThresh{3000, 4096, 8192}, true},
	} {
		got, change := neighWant(tc.cur, tc.hosts, tc.pods)
		if got != tc.want || change != tc.change {
			t.Errorf("neighWant(%v, %d hosts, %d pods) = %v, %t; want %v, %t", tc.cur, tc.hosts, tc.pods, got, change, tc.want, tc.change)
		}
	}
}

// TestSizeNeighRaisesAndRestores runs sizeNeigh and restoreNeigh against
// files standing in for /proc/sys/net/ipv4/neigh/default.
func TestSizeNeighRaisesAndRestores(t *testing.T) {
	dir := t.TempDir()
	old := neighDir
	neighDir = dir
	t.Cleanup(func() { neighDir = old })
	if err := writeNeigh(NeighThresh{128, 512, 1024}); err != nil {
		t.Fatal(err)
	}
	var said []string
	say := func(f string, a ...any) { said = append(said, f) }
	st := &State{}
	record := func(o, s NeighThresh) error { st.NeighSaved, st.NeighSet = &o, &s; return nil }
	if err := sizeNeigh(50, 2, say, record); err != nil {
		t.Fatal(err)
	}
	if cur, _ := readNeigh(); cur != (NeighThresh{2048, 4096, 8192}) || len(said) != 1 {
		t.Fatalf("after sizeNeigh: %v, said %q", cur, said)
	}
	var out strings.Builder
	if err := restoreNeigh(st, &out); err != nil {
		t.Fatal(err)
	}
	if cur, _ := readNeigh(); cur != (NeighThresh{128, 512, 1024}) || !strings.Contains(out.String(), "restored") {
		t.Fatalf("after restoreNeigh: %v, %q", cur, out.String())
	}

	// Someone changed them meanwhile: left alone, and said so.
	if err := sizeNeigh(50, 2, say, record); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gc_thresh3"), []byte("20000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := restoreNeigh(st, &out); err != nil || !strings.Contains(out.String(), "left as they are") {
		t.Fatalf("restoreNeigh after a foreign change: %v, %q", err, out.String())
	}

	// Thresholds that cannot be written (a read-only /proc/sys): refused,
	// with the sysctl to run, and nothing left changed.
	if err := writeNeigh(NeighThresh{128, 512, 1024}); err != nil {
		t.Fatal(err)
	}
	setNeigh = func(v NeighThresh) error {
		if v.T3 > 1024 {
			return os.ErrPermission
		}
		return writeNeigh(v)
	}
	t.Cleanup(func() { setNeigh = writeNeigh })
	err := sizeNeigh(50, 2, say, record)
	if err == nil || !strings.Contains(err.Error(), "sysctl -w net.ipv4.neigh.default.gc_thresh1=2048 net.ipv4.neigh.default.gc_thresh2=4096 net.ipv4.neigh.default.gc_thresh3=8192") {
		t.Fatalf("sizeNeigh that cannot write = %v, want a refusal naming the sysctl", err)
	}
	if cur, _ := readNeigh(); cur != (NeighThresh{128, 512, 1024}) {
		t.Errorf("after a refusal the thresholds are %v", cur)
	}
}
