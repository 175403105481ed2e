package report

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `# command: go test -run '^$' -bench . -benchtime 3x ./cmd/weftd/
goos: linux
pkg: github.com/weftnet/weft/cmd/weftd
BenchmarkColdStart/peers=1000-2         	       3	 771456152 ns/op	         0.3150 cpu-s	       771.5 ms-to-ready	        28.99 rss-MB
BenchmarkIPBatch/peers=1000-2           	       3	 421620970 ns/op	         0.1656 cpu-s
BenchmarkOneChange5000-2                	{"level":"error","msg":"failed to update storage version"}
       3	  61891722 ns/op	         3.000 idle-cpu-%	        20.01 idle-window-s	         1.000 cpu-clock-res-ns	        45.07 rss-MB
BenchmarkBurst-2    	--- FAIL: BenchmarkBurst-2
    bench_test.go:307: only saw 537 of 4000 route updates
BenchmarkSplit
    x_test.go:10: a log line
BenchmarkSplit-2   10   100 ns/op
PASS
ok  	github.com/weftnet/weft/cmd/weftd	84.085s
`

func TestParseBench(t *testing.T) {
	f, err := ParseBench(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if want := "go test -run '^$' -bench . -benchtime 3x ./cmd/weftd/"; f.Command != want {
		t.Errorf("command %q, want %q", f.Command, want)
	}
	for _, tc := range []struct {
		name, unit string
		want       float64
	}{
		{"BenchmarkColdStart/peers=1000", "ms-to-ready", 771.5},
		{"BenchmarkColdStart/peers=1000", "ns/op", 771456152},
		{"BenchmarkIPBatch/peers=1000", "cpu-s", 0.1656},
		{"BenchmarkOneChange5000", "idle-cpu-%", 3}, // split by a log line
		{"BenchmarkSplit", "ns/op", 100},
	} {
		t.Run(tc.name+"/"+tc.unit, func(t *testing.T) {
			got, _, ok := Find([]*BenchFile{f}, tc.name, tc.unit)
			if !ok || got != tc.want {
				t.Errorf("got %v (found %v), want %v", got, ok, tc.want)
			}
		})
	}
	if len(f.Failed) != 1 || f.Failed[0] != "BenchmarkBurst" {
		t.Errorf("failed %q, want [BenchmarkBurst]", f.Failed)
	}
	if len(f.Benches) != 4 {
		t.Errorf("parsed %d benchmarks, want 4: %+v", len(f.Benches), f.Benches)
	}
}

func TestParseBenchBadValue(t *testing.T) {
	if _, err := ParseBench(strings.NewReader("BenchmarkX-2 3 abc ns/op\n")); err == nil {
		t.Error("no error for a non-numeric value")
	}
}

func TestTrimProcs(t *testing.T) {
	for in, want := range map[string]string{
		"BenchmarkX-2":                 "BenchmarkX",
		"BenchmarkX/peers=1000-16":     "BenchmarkX/peers=1000",
		"BenchmarkX":                   "BenchmarkX",
		"BenchmarkX/host-gw":           "BenchmarkX/host-gw",
		"BenchmarkX/backend=host-gw-2": "BenchmarkX/backend=host-gw",
	} {
		if got := trimProcs(in); got != want {
			t.Errorf("trimProcs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValue(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct {
		stat string
		want float64
	}{{"median", 3}, {"", 3}, {"p95", 5}, {"max", 5}, {"sum", 15}} {
		m := Measurement{What: "x", Stat: tc.stat, Samples: xs}
		if got, err := m.Value(); err != nil || got != tc.want {
			t.Errorf("%q: got %v, %v; want %v", tc.stat, got, err, tc.want)
		}
	}
	if got := Quantile([]float64{1, 2, 3, 4}, 0.5); got != 2.5 {
		t.Errorf("median of an even count: %v, want 2.5", got)
	}
	if _, err := (&Measurement{What: "x", Stat: "mean", Samples: xs}).Value(); err == nil {
		t.Error("no error for an unknown statistic")
	}
	if _, err := (&Measurement{What: "x"}).Value(); err == nil {
		t.Error("no error without samples")
	}
}

func TestLabRoundTrip(t *testing.T) {
	in := `{"section":"1. Data plane","measurements":[{"what":"vxlan overlay","unit":"Gbit/s","stat":"median",
	"samples":[9,10,11],"command":"iperf3 -c x","baseline":{"what":"underlay","unit":"Gbit/s","samples":[20,20,20]}}]}`
	f, err := ParseLab(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	secs, err := Build(Titles, nil, nil, []*LabFile{f})
	if err != nil {
		t.Fatal(err)
	}
	want := Row{What: "vxlan overlay", Figure: "10.0 Gbit/s (median of 3)", Baseline: "20.0 Gbit/s: underlay", Ratio: "0.50×", Command: "iperf3 -c x"}
	if len(secs) != 1 || len(secs[0].Rows) != 1 || secs[0].Rows[0] != want {
		t.Errorf("got %+v, want one section with %+v", secs, want)
	}
}

func TestBuildAndRender(t *testing.T) {
	f, err := ParseBench(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	specs := []BenchRow{
		{Section: SecScale, What: "start, 1,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "ms-to-ready", BaseName: "BenchmarkIPBatch/peers=1000", BaseUnit: "ns/op", Show: "ms", BaseScale: 1e-6},
		{Section: SecScale, What: "cpu", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "cpu-s", BaseName: "BenchmarkIPBatch/peers=1000", BaseUnit: "cpu-s", Scale: 1000, Show: "CPU-ms", BaseLabel: "ip -batch"},
		{Section: SecScale, What: "idle | CPU", File: "weftd", Name: "BenchmarkOneChange5000", Unit: "idle-cpu-%", Show: "%",
			Notes: []Note{{Unit: "idle-window-s", Format: "over %s s"}, {Unit: "cpu-clock-res-ns", Format: "resolution %s ns"}, {Unit: "gone", Format: "%s"}}},
		{Section: SecScale, What: "gone", File: "weftd", Name: "BenchmarkGone", Unit: "ns/op", Show: "ns"},
		{Section: SecScale, What: "burst", File: "weftd", Name: "BenchmarkBurst", Unit: "ms-to-kernel", Show: "ms"},
		{Section: SecComponents, What: "not run", File: "vxlan", Name: "BenchmarkProgram1000", Unit: "ns/op", Show: "ns"},
	}
	labs := []*LabFile{{Section: SecLabUp, Measurements: []Measurement{
		{What: "lab up", Unit: "ms", Samples: []float64{4000, 6000, 5000}, Target: 5000, Command: "weft lab up"},
		{What: "lost", Unit: "packets", Stat: "sum", Samples: []float64{0}, Command: "ping `x`"},
	}}}
	secs, err := Build(Titles, specs, map[string]*BenchFile{"weftd": f}, labs)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Render(&b, Machine{Nproc: 2, Kernel: "6.1.0", LoadAvg: "0.10 0.20 0.30", Date: "2025-01-01 00:00 UTC"}, secs); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"- machine: 2 CPUs, kernel 6.1.0, load average at start 0.10 0.20 0.30\n",
		"## Lab up\n",
		"| lab up | 5000 ms (median of 3) | target 5000 ms | 1.00× | `weft lab up` |\n",
		"| start, 1,000 peers | 772 ms | 422 ms (IPBatch/peers=1000) | 1.83× | `go test -run '^$' -bench . -benchtime 3x ./cmd/weftd/` |\n",
		`| idle \| CPU | 3.00 % (over 20.0 s; resolution 1.00 ns; gone missing) | — | — |`,
		"| cpu | 315 CPU-ms | 166 CPU-ms (ip -batch) | 1.90× |",
		"| lost | 0 packets | — | — | `` ping `x` `` |\n",
		"| gone | not measured (missing from the output) |",
		"| burst | FAILED (its output is in bench/out/go-weftd.txt) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Components") {
		t.Errorf("a section whose file is absent was rendered:\n%s", got)
	}
	if strings.Index(got, "## Lab up") > strings.Index(got, "## 5. Scale") {
		t.Errorf("sections out of order:\n%s", got)
	}
}

func TestBuildUnknownSection(t *testing.T) {
	labs := []*LabFile{{Section: "nope", Measurements: []Measurement{{What: "x", Samples: []float64{1}}}}}
	if _, err := Build(Titles, nil, nil, labs); err == nil {
		t.Error("no error for an unknown section")
	}
}

func TestNumber(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1234.5: "1234", 99.94: "99.9", 12.34: "12.3", 1.234: "1.23", 0.5: "0.500",
		0.0886: "0.0886", 0.001234: "0.00123", 0.0001234: "0.000123", 5e-9: "5e-09", -0.0886: "-0.0886"} {
		if got := Number(v); got != want {
			t.Errorf("Number(%v) = %q, want %q", v, got, want)
		}
	}
}
