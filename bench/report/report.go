// Package report turns the raw outputs of the benchmark suite into
// bench/RESULTS.md: `go test -bench` output files and the JSON files that
// weftbench writes for the lab measurements. Every figure in the table is
// computed here from those files; nothing is typed by hand.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// CommandPrefix starts the line that run.sh writes at the top of every
// `go test -bench` output file, naming the command that produced it.
const CommandPrefix = "# command: "

// Bench is one result line of `go test -bench` output.
type Bench struct {
	// Name is the benchmark's name without the -GOMAXPROCS suffix, e.g.
	// "BenchmarkColdStart/peers=1000".
	Name string
	N    int
	// Metrics maps a unit ("ns/op", "rss-MB", ...) to its value.
	Metrics map[string]float64
}

// BenchFile is one parsed `go test -bench` output file.
type BenchFile struct {
	Command string
	Benches []Bench
	// Failed names the benchmarks reported as "--- FAIL".
	Failed []string
}

// ParseBench reads `go test -bench` output. Lines other than result lines
// (PASS, ok, goos, logs) are skipped; a CommandPrefix line sets Command. A
// result whose name and figures were split by a log line printed while the
// benchmark ran (the name, the log, then the figures on a line of their
// own) is joined again.
func ParseBench(r io.Reader) (*BenchFile, error) {
	f := &BenchFile{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	pending := "" // a benchmark name still waiting for its figures
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if c, ok := strings.CutPrefix(text, CommandPrefix); ok {
			f.Command = strings.TrimSpace(c)
			continue
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if i := slices.Index(fields, "FAIL:"); i > 0 && fields[i-1] == "---" && i+1 < len(fields) {
			f.Failed = append(f.Failed, trimProcs(fields[i+1]))
			pending = ""
			continue
		}
		if strings.HasPrefix(fields[0], "Benchmark") && (len(fields) < 2 || !isInt(fields[1])) {
			pending = fields[0]
			continue
		}
		if isInt(fields[0]) && pending != "" {
			fields = append([]string{pending}, fields...)
		}
		b, ok, err := parseBenchFields(fields)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if ok {
			f.Benches = append(f.Benches, b)
			pending = ""
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading benchmark output: %w", err)
	}
	return f, nil
}

func isInt(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// parseBenchFields parses the fields of one result line such as
//
//	BenchmarkColdStart/peers=1000-2   3   812345 ns/op   812.3 ms-to-ready
//
// and reports false for lines that are not results.
func parseBenchFields(fields []string) (Bench, bool, error) {
	if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 || !isInt(fields[1]) {
		return Bench{}, false, nil
	}
	n, _ := strconv.Atoi(fields[1])
	b := Bench{Name: trimProcs(fields[0]), N: n, Metrics: map[string]float64{}}
	for i := 2; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return Bench{}, false, fmt.Errorf("benchmark %s: value %q of %s: %w", fields[0], fields[i], fields[i+1], err)
		}
		b.Metrics[fields[i+1]] = v
	}
	return b, true, nil
}

// trimProcs removes the "-N" GOMAXPROCS suffix from a benchmark name.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

// Find returns the metric unit of the benchmark name in the files.
func Find(files []*BenchFile, name, unit string) (v float64, command string, ok bool) {
	for _, f := range files {
		for _, b := range f.Benches {
			if b.Name == name {
				if v, ok := b.Metrics[unit]; ok {
					return v, f.Command, true
				}
			}
		}
	}
	return 0, "", false
}

// LabFile is what weftbench writes for one section of lab measurements.
type LabFile struct {
	Section      string        `json:"section"`
	Measurements []Measurement `json:"measurements"`
}

// Measurement is one lab figure with its raw samples.
type Measurement struct {
	What string `json:"what"`
	Unit string `json:"unit"`
	// Stat says how the samples become the figure: "median", "p95",
	// "max" or "sum".
	Stat    string    `json:"stat"`
	Samples []float64 `json:"samples"`
	// Baseline, when set, was measured in the same run; the row shows
	// it and the ratio figure/baseline.
	Baseline *Measurement `json:"baseline,omitempty"`
	// Target is a goal to compare with when there is no baseline.
	Target  float64 `json:"target,omitempty"`
	Command string  `json:"command"`
	// Note is shown after the figure, e.g. how many runs failed.
	Note string `json:"note,omitempty"`
}

// ParseLab reads a weftbench JSON file.
func ParseLab(r io.Reader) (*LabFile, error) {
	var f LabFile
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return nil, fmt.Errorf("parsing lab measurements: %w", err)
	}
	return &f, nil
}

// Value computes the measurement's figure from its samples.
func (m *Measurement) Value() (float64, error) {
	if len(m.Samples) == 0 {
		return 0, fmt.Errorf("%s: no samples", m.What)
	}
	switch m.Stat {
	case "median", "":
		return Quantile(m.Samples, 0.5), nil
	case "p95":
		return Quantile(m.Samples, 0.95), nil
	case "max":
		return slices.Max(m.Samples), nil
	case "sum":
		s := 0.0
		for _, v := range m.Samples {
			s += v
		}
		return s, nil
	}
	return 0, fmt.Errorf("%s: unknown statistic %q", m.What, m.Stat)
}

// Quantile returns the q-quantile of xs (nearest rank, 0 <= q <= 1); the
// median of an even count is the mean of the two middle values.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if q == 0.5 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[int(math.Round(q*float64(len(s)-1)))]
}
