package report

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Row is one line of the results table.
type Row struct {
	What     string
	Figure   string
	Baseline string
	Ratio    string
	Command  string
}

// Section is a titled group of rows.
type Section struct {
	Title string
	Rows  []Row
}

// Machine says where and when the run happened.
type Machine struct {
	Nproc   int    `json:"nproc"`
	Kernel  string `json:"kernel"`
	LoadAvg string `json:"loadavg"` // /proc/loadavg's first three fields at the start
	Date    string `json:"date"`
}

// BenchRow says which metric of which `go test -bench` file becomes a row,
// and which metric of the same file is its baseline.
type BenchRow struct {
	Section string
	What    string
	File    string // key of the output file, e.g. "weftd" for go-weftd.txt
	Name    string // benchmark name without the -GOMAXPROCS suffix
	Unit    string // metric unit in the output
	// BaseName and BaseUnit name the baseline; empty for none.
	BaseName, BaseUnit string
	// Scale multiplies the value (e.g. 1e-6 turns ns/op into ms); 0 means 1.
	Scale float64
	Show  string // unit shown in the table
	// BaseScale multiplies the baseline; 0 means Scale.
	BaseScale float64
	// BaseLabel names the baseline in the table; empty shows BaseName
	// without "Benchmark" (or BaseUnit, for another metric of Name).
	BaseLabel string
	// Notes are more metrics of the benchmark Name, shown in brackets
	// after the figure: how it was measured (a window, a resolution).
	Notes []Note
}

// Note shows one metric beside a row's figure.
type Note struct {
	Unit string // metric unit in the output
	// Format has one %s, which receives the value formatted by Number.
	Format string
}

// Build turns the parsed files into sections in the order of titles: the
// rows of specs whose file is present, then the lab measurements of each
// section. A spec whose benchmark is missing from its file gives a row
// saying so.
func Build(titles []string, specs []BenchRow, benches map[string]*BenchFile, labs []*LabFile) ([]Section, error) {
	rows := map[string][]Row{}
	for _, s := range specs {
		f, ok := benches[s.File]
		if !ok {
			continue
		}
		rows[s.Section] = append(rows[s.Section], benchRow(s, f))
	}
	for _, lf := range labs {
		for _, m := range lf.Measurements {
			r, err := labRow(m)
			if err != nil {
				return nil, fmt.Errorf("section %s: %w", lf.Section, err)
			}
			rows[lf.Section] = append(rows[lf.Section], r)
		}
	}
	var secs []Section
	for _, t := range titles {
		if len(rows[t]) > 0 {
			secs = append(secs, Section{Title: t, Rows: rows[t]})
		}
	}
	for t := range rows {
		found := false
		for _, want := range titles {
			found = found || want == t
		}
		if !found {
			return nil, fmt.Errorf("rows for unknown section %q", t)
		}
	}
	return secs, nil
}

func benchRow(s BenchRow, f *BenchFile) Row {
	scale := s.Scale
	if scale == 0 {
		scale = 1
	}
	r := Row{What: s.What, Command: f.Command, Figure: "not measured (missing from the output)", Baseline: "—", Ratio: "—"}
	v, _, ok := Find([]*BenchFile{f}, s.Name, s.Unit)
	if !ok {
		if slices.Contains(f.Failed, s.Name) {
			r.Figure = "FAILED (its output is in bench/out/go-" + s.File + ".txt)"
		}
		return r
	}
	v *= scale
	r.Figure = Number(v) + " " + s.Show
	if len(s.Notes) > 0 {
		var notes []string
		for _, n := range s.Notes {
			nv, _, ok := Find([]*BenchFile{f}, s.Name, n.Unit)
			if !ok {
				notes = append(notes, n.Unit+" missing")
				continue
			}
			notes = append(notes, fmt.Sprintf(n.Format, Number(nv)))
		}
		r.Figure += " (" + strings.Join(notes, "; ") + ")"
	}
	if s.BaseName == "" {
		return r
	}
	bv, _, ok := Find([]*BenchFile{f}, s.BaseName, s.BaseUnit)
	if !ok {
		r.Baseline = "missing"
		return r
	}
	if s.BaseScale != 0 {
		scale = s.BaseScale
	}
	bv *= scale
	label := strings.TrimPrefix(s.BaseName, "Benchmark")
	switch {
	case s.BaseLabel != "":
		label = s.BaseLabel
	case s.BaseName == s.Name:
		label = s.BaseUnit // another metric of the same benchmark
	}
	r.Baseline = fmt.Sprintf("%s %s (%s)", Number(bv), s.Show, label)
	r.Ratio = Ratio(v, bv)
	return r
}

func labRow(m Measurement) (Row, error) {
	v, err := m.Value()
	if err != nil {
		return Row{}, err
	}
	r := Row{What: m.What, Command: m.Command, Baseline: "—", Ratio: "—"}
	r.Figure = Number(v) + " " + m.Unit
	if len(m.Samples) > 1 {
		r.Figure += fmt.Sprintf(" (%s of %d)", statName(m.Stat), len(m.Samples))
	}
	if m.Note != "" {
		r.Figure += "; " + m.Note
	}
	switch {
	case m.Baseline != nil:
		bv, err := m.Baseline.Value()
		if err != nil {
			return Row{}, err
		}
		r.Baseline = fmt.Sprintf("%s %s: %s", Number(bv), m.Baseline.Unit, m.Baseline.What)
		r.Ratio = Ratio(v, bv)
	case m.Target != 0:
		r.Baseline = fmt.Sprintf("target %s %s", Number(m.Target), m.Unit)
		r.Ratio = Ratio(v, m.Target)
	}
	return r, nil
}

func statName(s string) string {
	if s == "" {
		return "median"
	}
	return s
}

// Number formats v with three significant digits (no fewer for small
// values: an idle CPU of 0.0886 % stays 0.0886, not 0.09); integers from
// 100 up keep all their digits.
func Number(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 0.001:
		decimals := 2 - int(math.Floor(math.Log10(a)))
		return strconv.FormatFloat(v, 'f', decimals, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// Ratio formats v/base, or "—" when base is 0.
func Ratio(v, base float64) string {
	if base == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

// Render writes the results as Markdown: a header naming the machine, then
// one table per section.
func Render(w io.Writer, m Machine, secs []Section) error {
	var b strings.Builder
	b.WriteString("# Weft benchmark results\n\n")
	b.WriteString("Generated by `bash bench/run.sh` (bench/cmd/benchreport); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %d CPUs, kernel %s, load average at start %s\n", m.Date, m.Nproc, m.Kernel, m.LoadAvg)
	for _, s := range secs {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		b.WriteString("| what | figure | baseline (same run) | ratio | command |\n|---|---|---|---|---|\n")
		for _, r := range s.Rows {
			cmd := "—"
			switch {
			case strings.Contains(r.Command, "`"):
				cmd = "`` " + r.Command + " ``"
			case r.Command != "":
				cmd = "`" + r.Command + "`"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(r.What), cell(r.Figure), cell(r.Baseline), cell(r.Ratio), cell(cmd))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell escapes what would break a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
