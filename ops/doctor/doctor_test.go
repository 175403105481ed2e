package doctor

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sampleReport has a check of every status, with details, cause and fix.
func sampleReport() *Report {
	return &Report{
		Node: "eth0 192.168.1.11, subnet 10.244.3.0/24, backend vxlan",
		Results: []Result{
			{Check: "store", Status: OK, Verdict: "network 10.244.0.0/16, backend vxlan, 3 valid leases, 0 invalid"},
			{Check: "sysctl ip_forward", Status: Problem, Verdict: "net.ipv4.ip_forward is 0: the node does not forward pod traffic",
				Cause: "something turned IPv4 forwarding off after weftd started",
				Fix:   []string{"sysctl -w net.ipv4.ip_forward=1", "echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-weft.conf"}},
			{Check: "sysctl bridge-nf-call-iptables", Status: Skipped, Verdict: "no cni0 bridge: no pods bridged yet"},
			{Check: "routes, neighbours, fdb", Status: Problem, Verdict: "1 missing, 0 stale, 0 extra entries against the peers' leases",
				Details: []string{"missing fdb 6e:8d:38:2c:01:02: want dst 192.168.1.12"},
				Cause:   "someone changed the agent's entries", Fix: []string{"restart weftd"}},
			{Check: "neighbour table", Status: Warn, Verdict: "the neighbour table overflowed earlier", Cause: "it has room now"},
			{Check: "agent ready", Status: Unknown, Verdict: "cannot read the agent's metrics"},
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	var text, js bytes.Buffer
	if err := RenderText(&text, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.txt", text.Bytes())
	if err := RenderJSON(&js, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", js.Bytes())
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		st   []Status
		want int
	}{
		{nil, 0},
		{[]Status{OK, Skipped, Warn}, 0},
		{[]Status{OK, Unknown}, 2},
		{[]Status{Unknown, Problem, OK}, 1},
	} {
		r := &Report{}
		for _, s := range tc.st {
			r.Results = append(r.Results, Result{Status: s})
		}
		if got := r.ExitCode(); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.st, got, tc.want)
		}
	}
}

func TestForwardVerdict(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, tc := range []struct {
		name  string
		lines []string
		want  Status
	}{
		{"accept policy", []string{"-P FORWARD ACCEPT"}, OK},
		{"drop with our jump", []string{"-P FORWARD DROP", `-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`}, OK},
		{"drop with an accept for the network", []string{"-P FORWARD DROP", "-A FORWARD -s 10.244.0.0/16 -j ACCEPT"}, OK},
		{"drop with nothing", []string{"-P FORWARD DROP", "-A FORWARD -j DOCKER-USER"}, Problem},
		{"drop with an accept for another network", []string{"-P FORWARD DROP", "-A FORWARD -s 10.9.0.0/16 -j ACCEPT"}, Problem},
	} {
		if got := forwardVerdict(tc.lines, network, true); got.Status != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.name, got.Status, got.Verdict, tc.want)
		}
	}
}

const ntable = `inet arp_cache 
    thresh1 128 thresh2 512 thresh3 1024 gc_int 30000 
    config key_len 4 entry_size 336 entries 1019 
    stats allocs 129071 destroys 129045 hash_grows 11 
    periodic_gc_runs 140 forced_gc_runs 9 
    table_fulls 17 

inet arp_cache 
    dev eth0 
    refcnt 1 reachable 16424 base_reachable 30000 retrans 1000 
`

func TestNeighbourTable(t *testing.T) {
	tb, err := ParseNTable(ntable)
	if err != nil {
		t.Fatal(err)
	}
	if tb != (NeighTable{Thresh1: 128, Thresh2: 512, Thresh3: 1024, Entries: 1019, TableFulls: 17}) {
		t.Fatalf("ParseNTable = %+v", tb)
	}
	res := neighVerdict(tb, 50)
	if res.Status != Problem || !strings.Contains(res.Verdict, "1019 entries; gc_thresh1/2/3 128/512/1024; 17 overflows") ||
		strings.Join(res.Fix, "\n") != strings.Join(NeighSysctls(1019), "\n") {
		t.Errorf("neighVerdict = %+v", res)
	}
	if got := NeighSysctls(1019)[2]; got != "sysctl -w net.ipv4.neigh.default.gc_thresh3=2048" {
		t.Errorf("NeighSysctls(1019)[2] = %q", got)
	}
	if _, err := ParseNTable("inet arp_cache\n    thresh1 1\n"); err == nil {
		t.Error("ParseNTable accepted a table without thresholds")
	}
	tb = NeighTable{Thresh1: 128, Thresh2: 512, Thresh3: 1024, Entries: 30}
	if res := neighVerdict(tb, 3); res.Status != OK {
		t.Errorf("a small table: %+v", res)
	}
}

// TestTroubleshootingFollowsTheChecks checks that the troubleshooting
// guide has a section for every check, in the report's order.
func TestTroubleshootingFollowsTheChecks(t *testing.T) {
	b, err := os.ReadFile("../../Documentation/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	var headings []string
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			headings = append(headings, h)
		}
	}
	// A heading covers the checks it names: "sysctl ip_forward, rp_filter"
	// covers "sysctl ip_forward" and "sysctl rp_filter".
	covers := func(h string) []string {
		out := []string{h}
		parts := strings.Split(h, ", ")
		group, _, ok := strings.Cut(parts[0], " ")
		out = append(out, parts[0])
		for _, p := range parts[1:] {
			if ok && !strings.HasPrefix(p, group+" ") {
				p = group + " " + p
			}
			out = append(out, p)
		}
		return out
	}
	at := 0
	for _, name := range CheckNames {
		if name == "external interface" {
			continue // under "store"
		}
		found := -1
		for i := at; i < len(headings) && found < 0; i++ {
			for _, c := range covers(headings[i]) {
				if c == name {
					found = i
				}
			}
		}
		if found < 0 {
			t.Errorf("troubleshooting.md has no section for the check %q at or after %q (headings: %q)", name, headings[at], headings)
			continue
		}
		at = found
	}
}
