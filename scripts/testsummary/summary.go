package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`), or of the
// build output it interleaves (`go help buildjson`).
type event struct {
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build events
}

// test is one test or subtest.
type test struct {
	pkg, name string
	result    string // pass, fail or skip; "" while running
	output    []string
}

func (t *test) id() string { return t.pkg + " " + t.name }

// pkg is one package's run.
type pkg struct {
	name                    string
	result                  string   // pass, fail or skip
	summary                 []string // go test's own summary lines for the package
	output                  []string // package output outside any test
	passed, failed, skipped int
}

// Summary accumulates a `go test -json` stream.
type Summary struct {
	w      io.Writer
	tests  map[string]*test
	order  []*test // in the order they started
	pkgs   map[string]*pkg
	done   []*pkg              // in the order they finished
	builds map[string][]string // build output by import path
}

// NewSummary returns a Summary that prints progress to w.
func NewSummary(w io.Writer) *Summary {
	return &Summary{w: w, tests: map[string]*test{}, pkgs: map[string]*pkg{}, builds: map[string][]string{}}
}

// summaryLine matches go test's per-package result lines: "ok  \t<pkg>\t1.2s",
// "FAIL\t<pkg>\t0.3s", "FAIL\t<pkg> [build failed]", "?   \t<pkg>\t[no test files]".
var summaryLine = regexp.MustCompile(`^(ok|FAIL|\?)\s+\S+(\s|$)`)

// Read consumes the stream until EOF, which it does not report as an error.
func (s *Summary) Read(r *bufio.Reader) error {
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			s.line(line)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *Summary) line(line string) {
	var e event
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
		fmt.Fprint(s.w, line)
		return
	}
	switch {
	case e.Action == "build-output":
		s.builds[e.ImportPath] = append(s.builds[e.ImportPath], e.Output)
		return
	case e.Action == "build-fail":
		// The package's own fail event and summary line follow.
		for _, l := range s.builds[e.ImportPath] {
			fmt.Fprint(s.w, l)
		}
		return
	case e.Package == "":
		return
	}
	p := s.pkgs[e.Package]
	if p == nil {
		p = &pkg{name: e.Package}
		s.pkgs[e.Package] = p
	}
	if e.Test == "" {
		switch e.Action {
		case "output":
			if summaryLine.MatchString(e.Output) {
				p.summary = append(p.summary, strings.TrimRight(e.Output, "\n"))
			} else {
				p.output = append(p.output, e.Output)
			}
		case "pass", "fail", "skip":
			p.result = e.Action
			s.done = append(s.done, p)
			s.progress(p)
		}
		return
	}
	key := e.Package + " " + e.Test
	t := s.tests[key]
	if t == nil {
		t = &test{pkg: e.Package, name: e.Test}
		s.tests[key] = t
		s.order = append(s.order, t)
	}
	switch e.Action {
	case "output":
		t.output = append(t.output, e.Output)
	case "pass":
		t.result = "pass"
		p.passed++
	case "skip":
		t.result = "skip"
		p.skipped++
	case "fail":
		t.result = "fail"
		p.failed++
		if !s.hasFailedChild(t) {
			// The innermost failure carries the message; print it now so
			// that a long run shows failures as they happen.
			fmt.Fprintf(s.w, "--- FAIL: %s (%s)\n%s", t.name, t.pkg, strings.Join(t.output, ""))
		}
	}
}

// hasFailedChild reports whether a subtest of t failed.
func (s *Summary) hasFailedChild(t *test) bool {
	for _, o := range s.order {
		if o.pkg == t.pkg && strings.HasPrefix(o.name, t.name+"/") && o.result == "fail" {
			return true
		}
	}
	return false
}

func (s *Summary) progress(p *pkg) {
	if p.passed+p.failed+p.skipped == 0 && p.result != "fail" {
		return
	}
	fmt.Fprintf(s.w, "== %s: %s (%d passed, %d failed, %d skipped)\n", p.name, p.result, p.passed, p.failed, p.skipped)
	if p.result == "fail" && p.failed == 0 {
		// A failure outside any test: a panic in TestMain, a timeout, a
		// test binary that did not start.
		for _, l := range p.output {
			fmt.Fprint(s.w, l)
		}
	}
}

// Counts are the totals of a run.
type Counts struct {
	Tests, Passed, Failed, Skipped int // tests and subtests
	TopLevel                       int // tests that are not subtests
	Packages, FailedPackages       int
}

// Counts returns the totals so far.
func (s *Summary) Counts() Counts {
	var c Counts
	for _, t := range s.order {
		if t.result == "" {
			continue
		}
		c.Tests++
		if !strings.Contains(t.name, "/") {
			c.TopLevel++
		}
		switch t.result {
		case "pass":
			c.Passed++
		case "fail":
			c.Failed++
		case "skip":
			c.Skipped++
		}
	}
	for _, p := range s.done {
		c.Packages++
		if p.result == "fail" {
			c.FailedPackages++
		}
	}
	return c
}

// skipReason returns the message a skipped test logged.
func skipReason(t *test) string {
	var msg []string
	for _, l := range t.output {
		trim := strings.TrimSpace(l)
		if trim == "" || strings.HasPrefix(trim, "=== ") || strings.HasPrefix(trim, "--- SKIP") {
			continue
		}
		msg = append(msg, trim)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " / ")
}

// Report prints the totals, the skipped tests and, last, the package
// summary lines. It returns whether the run counts as a success: nothing
// failed, some package reported a result, and every skipped test is
// allowed (allowSkips, or named in allowed).
func (s *Summary) Report(allowed map[string]string, allowSkips bool) bool {
	ok := true
	c := s.Counts()
	var skipped, denied []*test
	for _, t := range s.order {
		if t.result != "skip" {
			continue
		}
		skipped = append(skipped, t)
		if _, yes := allowed[t.id()]; !yes && !allowSkips {
			denied = append(denied, t)
		}
	}
	fmt.Fprintln(s.w)
	fmt.Fprintf(s.w, "== tests: %d run (%d top-level tests, %d subtests): %d passed, %d failed, %d skipped; %d packages\n",
		c.Tests, c.TopLevel, c.Tests-c.TopLevel, c.Passed, c.Failed, c.Skipped, c.Packages)
	if len(skipped) > 0 {
		fmt.Fprintf(s.w, "== skipped (%d):\n", len(skipped))
		for _, t := range skipped {
			note := ""
			if why, yes := allowed[t.id()]; yes {
				note = " [allowed: " + why + "]"
			}
			fmt.Fprintf(s.w, "   %s %s: %s%s\n", t.pkg, t.name, skipReason(t), note)
		}
	}
	if len(denied) > 0 {
		ok = false
		fmt.Fprintf(s.w, "== FAIL: %d tests were skipped that must run (privileged tests are required; run as root, or add the test to the allowlist with a reason):\n", len(denied))
		for _, t := range denied {
			fmt.Fprintf(s.w, "   %s %s\n", t.pkg, t.name)
		}
	}
	if c.Failed > 0 {
		var names []string
		for _, t := range s.order {
			if t.result == "fail" && !s.hasFailedChild(t) {
				names = append(names, t.pkg+" "+t.name)
			}
		}
		fmt.Fprintf(s.w, "== failed tests (%d):\n   %s\n", len(names), strings.Join(names, "\n   "))
	}
	if c.Packages == 0 {
		ok = false
		fmt.Fprintln(s.w, "== FAIL: the stream holds no package result (did go test start?)")
	}
	fmt.Fprintln(s.w)
	// go test's own lines, last.
	failed := false
	for _, p := range s.done {
		for _, l := range p.summary {
			fmt.Fprintln(s.w, l)
		}
		if len(p.summary) == 0 {
			// A package killed before it printed its line.
			word := "ok  "
			if p.result == "fail" {
				word = "FAIL"
			}
			fmt.Fprintf(s.w, "%s\t%s\t[no summary line: %s]\n", word, p.name, p.result)
		}
		failed = failed || p.result == "fail"
	}
	if failed || c.Failed > 0 {
		ok = false
	}
	if !ok {
		fmt.Fprintln(s.w, "FAIL")
	}
	return ok
}

// ParseAllowlist reads lines "<package> <test> # reason"; blank lines and
// lines starting with # are ignored. Every entry needs a reason.
func ParseAllowlist(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		entry, reason, _ := strings.Cut(line, "#")
		f := strings.Fields(entry)
		reason = strings.TrimSpace(reason)
		if len(f) != 2 || reason == "" {
			return nil, fmt.Errorf("line %d: %q: want \"<package> <test> # reason\"", n, line)
		}
		out[f[0]+" "+f[1]] = reason
	}
	return out, sc.Err()
}
