// Command benchreport writes bench/RESULTS.md from the raw outputs in a
// directory: machine.json, go-<name>.txt (`go test -bench` output, its first
// line naming the command) and lab-<section>.json (weftbench).
//
//	go run ./bench/cmd/benchreport -in bench/out -out bench/RESULTS.md
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/weftnet/weft/bench/report"
)

func main() {
	in := flag.String("in", "bench/out", "directory of raw outputs")
	out := flag.String("out", "bench/RESULTS.md", "Markdown file to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	var m report.Machine
	if b, err := os.ReadFile(filepath.Join(in, "machine.json")); err != nil {
		return err
	} else if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("machine.json: %w", err)
	}
	benches := map[string]*report.BenchFile{}
	goFiles, _ := filepath.Glob(filepath.Join(in, "go-*.txt"))
	for _, p := range goFiles {
		f, err := open(p, func(r *os.File) (*report.BenchFile, error) { return report.ParseBench(r) })
		if err != nil {
			return err
		}
		benches[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "go-"), ".txt")] = f
	}
	labFiles, _ := filepath.Glob(filepath.Join(in, "lab-*.json"))
	sort.Strings(labFiles)
	var labs []*report.LabFile
	for _, p := range labFiles {
		f, err := open(p, func(r *os.File) (*report.LabFile, error) { return report.ParseLab(r) })
		if err != nil {
			return err
		}
		labs = append(labs, f)
	}
	secs, err := report.Build(report.Titles, report.Specs, benches, labs)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := report.Render(&b, m, secs); err != nil {
		return err
	}
	return os.WriteFile(out, b.Bytes(), 0o644)
}

// open parses the file at path with parse, naming the file in errors.
func open[T any](path string, parse func(*os.File) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return v, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
