package lab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// neighDir holds the kernel's IPv4 neighbour table thresholds. The table
// is one for the whole kernel: every namespace's entries count against
// them, so a lab of many hosts fills it long before any one host would.
var neighDir = "/proc/sys/net/ipv4/neigh/default"

// NeighThresh are the neighbour table's gc_thresh1, 2 and 3.
type NeighThresh struct {
	T1 int `json:"gcThresh1"`
	T2 int `json:"gcThresh2"`
	T3 int `json:"gcThresh3"`
}

// String renders the three values as sysctl names them.
func (t NeighThresh) String() string { return fmt.Sprintf("%d/%d/%d", t.T1, t.T2, t.T3) }

// sysctls returns the commands that set t.
func (t NeighThresh) sysctls() string {
	return fmt.Sprintf("sysctl -w net.ipv4.neigh.default.gc_thresh1=%d net.ipv4.neigh.default.gc_thresh2=%d net.ipv4.neigh.default.gc_thresh3=%d", t.T1, t.T2, t.T3)
}

// neighEntries estimates the neighbour entries a lab holds at once: in each
// host, an underlay and an overlay entry per other host, its bridge and
// pods; in each pod, its gateway and the pods it pings on its host; in the
// root namespace, the hosts on the bridge.
func neighEntries(hosts, pods int) int {
	return hosts*(2*(hosts-1)+1+pods) + hosts*pods*(1+pods) + hosts
}

// neighWant returns the thresholds a lab of hosts and pods needs: thresh3
// at least one and a half times its entries (rounded up to a power of
// two), thresh2 half of that, thresh1 a quarter; never lower than cur.
// change is false when cur already serves. (Measured: 50 hosts with 2
// pods each hold about 5,300 entries; at 128/512/1024 most pings go
// unanswered, at 2048/4096/8192, what this returns for them, the
// 9,900-ping matrix is green and `up` takes 20 s.)
func neighWant(cur NeighThresh, hosts, pods int) (want NeighThresh, change bool) {
	need := neighEntries(hosts, pods) * 3 / 2
	if cur.T3 >= need && cur.T2 >= need/2 {
		return cur, false
	}
	t3 := 1024
	for t3 < need {
		t3 *= 2
	}
	want = NeighThresh{T1: max(cur.T1, t3/4), T2: max(cur.T2, t3/2), T3: max(cur.T3, t3)}
	return want, want != cur
}

// setNeigh writes the thresholds (a variable for tests that cannot make
// /proc/sys read-only).
var setNeigh = writeNeigh

func readNeigh() (NeighThresh, error) {
	var t NeighThresh
	for _, f := range []struct {
		name string
		v    *int
	}{{"gc_thresh1", &t.T1}, {"gc_thresh2", &t.T2}, {"gc_thresh3", &t.T3}} {
		b, err := os.ReadFile(filepath.Join(neighDir, f.name))
		if err != nil {
			return t, fmt.Errorf("reading net.ipv4.neigh.default.%s: %w", f.name, err)
		}
		if *f.v, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return t, fmt.Errorf("reading net.ipv4.neigh.default.%s: %q is not a number", f.name, strings.TrimSpace(string(b)))
		}
	}
	return t, nil
}

// writeNeigh sets the thresholds, thresh3 first when raising (the kernel
// requires nothing of their order, but a reader never sees thresh1 above
// thresh3 this way).
func writeNeigh(t NeighThresh) error {
	for _, f := range []struct {
		name string
		v    int
	}{{"gc_thresh3", t.T3}, {"gc_thresh2", t.T2}, {"gc_thresh1", t.T1}} {
		if err := os.WriteFile(filepath.Join(neighDir, f.name), []byte(strconv.Itoa(f.v)+"\n"), 0o644); err != nil {
			return fmt.Errorf("setting net.ipv4.neigh.default.%s=%d: %w", f.name, f.v, err)
		}
	}
	return nil
}

// sizeNeigh raises the neighbour table's thresholds for a lab of hosts and
// pods when they are too small, returning the values to restore (nil when
// nothing changed), or refuses with the sysctl to run when it cannot set
// them. record is called with the old and new values before the write.
func sizeNeigh(hosts, pods int, say func(string, ...any), record func(old, set NeighThresh) error) error {
	cur, err := readNeigh()
	if err != nil {
		say("cannot read the neighbour table's thresholds (%v); a large lab may lose pings to \"neighbor table overflow\"", err)
		return nil
	}
	want, change := neighWant(cur, hosts, pods)
	if !change {
		return nil
	}
	if err := record(cur, want); err != nil {
		return err
	}
	if err := setNeigh(want); err != nil {
		_ = setNeigh(cur)
		return fmt.Errorf("%d hosts need about %d neighbour entries, more than the kernel's thresholds %s serve, and the lab cannot raise them (%v); run as root in the root namespace:\n  %s",
			hosts, neighEntries(hosts, pods), cur, err, want.sysctls())
	}
	say("raised the neighbour table's thresholds (gc_thresh1/2/3) from %s to %s for %d hosts; `weft lab down` restores them", cur, want, hosts)
	return nil
}

// restoreNeigh puts back the thresholds a lab raised, unless someone
// changed them since (then it says so and leaves them).
func restoreNeigh(st *State, out io.Writer) error {
	if st.NeighSaved == nil || st.NeighSet == nil {
		return nil
	}
	cur, err := readNeigh()
	if err != nil {
		return err
	}
	if cur != *st.NeighSet {
		fmt.Fprintf(out, "the neighbour table's thresholds are %s, not the %s the lab set: left as they are (the lab found %s)\n", cur, *st.NeighSet, *st.NeighSaved)
		return nil
	}
	if err := setNeigh(*st.NeighSaved); err != nil {
		return err
	}
	fmt.Fprintf(out, "restored the neighbour table's thresholds (gc_thresh1/2/3) to %s\n", *st.NeighSaved)
	return nil
}
