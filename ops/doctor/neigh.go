package doctor

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// NeighTable is the IPv4 neighbour table's size and thresholds, as
// `ip -s ntable show name arp_cache` prints them. The table is one for the
// whole kernel: every namespace's entries count against its thresholds.
type NeighTable struct {
	Thresh1, Thresh2, Thresh3 int
	Entries                   int
	// TableFulls counts the times the table overflowed since boot (the
	// kernel logs "neighbor table overflow!").
	TableFulls int
}

// ParseNTable reads the first (table-wide) arp_cache block of
// `ip -s ntable show` output.
func ParseNTable(out string) (NeighTable, error) {
	var t NeighTable
	found := map[string]bool{}
	in := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "inet" && f[1] == "arp_cache" {
			if in {
				break // the per-device blocks follow
			}
			in = true
			continue
		}
		if !in {
			continue
		}
		if len(f) == 0 {
			break
		}
		for i := 0; i+1 < len(f); i++ {
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				continue
			}
			switch f[i] {
			case "thresh1":
				t.Thresh1 = v
			case "thresh2":
				t.Thresh2 = v
			case "thresh3":
				t.Thresh3 = v
			case "entries":
				t.Entries = v
			case "table_fulls":
				t.TableFulls = v
			default:
				continue
			}
			found[f[i]] = true
		}
	}
	for _, k := range []string{"thresh1", "thresh2", "thresh3", "entries"} {
		if !found[k] {
			return t, fmt.Errorf("ip -s ntable: no %s in the arp_cache table", k)
		}
	}
	return t, nil
}

// ReadNeighTable runs `ip -s ntable show name arp_cache`.
func ReadNeighTable(ctx context.Context) (NeighTable, error) {
	out, err := exec.CommandContext(ctx, "ip", "-s", "ntable", "show", "name", "arp_cache").Output()
	if err != nil {
		return NeighTable{}, fmt.Errorf("ip -s ntable show name arp_cache: %w", err)
	}
	return ParseNTable(string(out))
}

// NeighSysctls returns the commands that size the neighbour table for
// about want entries: thresh3 twice want (rounded up to a power of two,
// at least 1024), thresh2 half of it, thresh1 a quarter.
func NeighSysctls(want int) []string {
	t3 := 1024
	for t3 < 2*want {
		t3 *= 2
	}
	return []string{
		fmt.Sprintf("sysctl -w net.ipv4.neigh.default.gc_thresh1=%d", t3/4),
		fmt.Sprintf("sysctl -w net.ipv4.neigh.default.gc_thresh2=%d", t3/2),
		fmt.Sprintf("sysctl -w net.ipv4.neigh.default.gc_thresh3=%d", t3),
	}
}

// checkNeighbourTable reports the neighbour table's entries against its
// thresholds and its overflow counter.
func (n *node) checkNeighbourTable(ctx context.Context) Result {
	res := Result{Check: "neighbour table"}
	t, err := ReadNeighTable(ctx)
	if err != nil {
		res.Status, res.Verdict, res.Cause = Unknown, "cannot read the neighbour table", err.Error()
		return res
	}
	return neighVerdict(t, len(n.leases))
}

// neighVerdict judges the table; peers is the number of leases (each needs
// an overlay neighbour and, on one L2 segment, an underlay one).
func neighVerdict(t NeighTable, peers int) Result {
	res := Result{Check: "neighbour table"}
	state := fmt.Sprintf("%d entries; gc_thresh1/2/3 %d/%d/%d; %d overflows since boot", t.Entries, t.Thresh1, t.Thresh2, t.Thresh3, t.TableFulls)
	need := max(t.Entries, 2*peers)
	switch {
	case t.TableFulls > 0 && t.Entries >= t.Thresh2:
		res.Status, res.Verdict = Problem, "the neighbour table overflows: "+state
		res.Cause = "entries beyond gc_thresh3 are refused (the kernel logs \"neighbor table overflow!\") and packets to those neighbours are dropped; the table is shared by every namespace of the kernel, and each peer needs an overlay and an underlay entry"
		res.Fix = NeighSysctls(need)
	case t.Entries >= t.Thresh3*3/4 || 2*peers >= t.Thresh3:
		res.Status, res.Verdict = Warn, "the neighbour table is near its limit: "+state
		res.Cause = fmt.Sprintf("%d leases need about %d entries; past gc_thresh3 the kernel refuses new ones", peers, 2*peers)
		res.Fix = NeighSysctls(need)
	case t.TableFulls > 0:
		res.Status, res.Verdict = Warn, "the neighbour table overflowed earlier: "+state
		res.Cause = "it has room now; the counter only grows until reboot"
	default:
		res.Status, res.Verdict = OK, state
	}
	return res
}
