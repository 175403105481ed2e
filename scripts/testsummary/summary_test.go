package main

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"
)

// run feeds the recorded streams in testdata (real `go test -json` output,
// times removed) to a Summary and returns its report and verdict.
func run(t *testing.T, allowed map[string]string, allowSkips bool, files ...string) (string, bool) {
	t.Helper()
	var in bytes.Buffer
	for _, f := range files {
		b, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		in.Write(b)
	}
	var out bytes.Buffer
	s := NewSummary(&out)
	_ = s.Read(bufio.NewReader(&in))
	ok := s.Report(allowed, allowSkips)
	return out.String(), ok
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) []string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return l[max(0, len(l)-n):]
}

func TestReportEndsWithGoTestSummary(t *testing.T) {
	out, ok := run(t, nil, false, "run.json", "buildfail.json")
	if ok {
		t.Error("a run with a failed test, a build failure and a skip passed")
	}
	want := []string{
		"ok  \texample.com/ts/a\t0.003s",
		"?   \texample.com/ts/c\t[no test files]",
		"FAIL\texample.com/ts/b\t0.005s",
		"FAIL\texample.com/ts/d [build failed]",
		"FAIL",
	}
	if got := lastLines(out, len(want)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("last lines:\n%s\nwant:\n%s\nwhole output:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
	for _, w := range []string{
		"== tests: 6 run (4 top-level tests, 2 subtests): 3 passed, 2 failed, 1 skipped; 4 packages",
		"example.com/ts/a TestSkip: a_test.go:4: needs root",
		"tests were skipped that must run",
		"b_test.go:3: boom",                           // the failure's output
		"d/d_test.go:3:28: undefined: undefinedThing", // the build error
		"== failed tests (1):\n   example.com/ts/b TestFail/inner",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, out)
		}
	}
}

func TestSkipsFailUnlessAllowed(t *testing.T) {
	tests := []struct {
		name       string
		allowed    map[string]string
		allowSkips bool
		wantOK     bool
		want       string
	}{
		{name: "denied", wantOK: false, want: "== FAIL: 1 tests were skipped that must run"},
		{name: "allowlisted", allowed: map[string]string{"example.com/ts/a TestSkip": "needs a GPU"}, wantOK: true, want: "[allowed: needs a GPU]"},
		{name: "opted out", allowSkips: true, wantOK: true, want: "== skipped (1):"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Only package a (one pass, one skip) and c (no tests).
			var in bytes.Buffer
			b, err := os.ReadFile("testdata/run.json")
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.SplitAfter(string(b), "\n") {
				if !strings.Contains(l, "example.com/ts/b") {
					in.WriteString(l)
				}
			}
			var out bytes.Buffer
			s := NewSummary(&out)
			_ = s.Read(bufio.NewReader(&in))
			ok := s.Report(tc.allowed, tc.allowSkips)
			if ok != tc.wantOK || !strings.Contains(out.String(), tc.want) {
				t.Errorf("ok = %v, want %v; output lacks %q?\n%s", ok, tc.wantOK, tc.want, out.String())
			}
			last := lastLines(out.String(), 1)[0]
			if tc.wantOK && last != "?   \texample.com/ts/c\t[no test files]" {
				t.Errorf("last line %q, want go test's line for the last package", last)
			}
			if !tc.wantOK && last != "FAIL" {
				t.Errorf("last line %q, want FAIL", last)
			}
		})
	}
}

func TestEmptyStreamFails(t *testing.T) {
	var out bytes.Buffer
	s := NewSummary(&out)
	_ = s.Read(bufio.NewReader(strings.NewReader("go: cannot find main module\n")))
	if s.Report(nil, false) {
		t.Errorf("a stream without results passed:\n%s", out.String())
	}
	if !strings.HasPrefix(out.String(), "go: cannot find main module\n") {
		t.Errorf("a line that is not JSON was not passed through:\n%s", out.String())
	}
}

func TestParseAllowlist(t *testing.T) {
	got, err := ParseAllowlist(strings.NewReader("# comment\n\ngithub.com/x/p TestA # needs a GPU\n"))
	if err != nil || got["github.com/x/p TestA"] != "needs a GPU" || len(got) != 1 {
		t.Errorf("ParseAllowlist = %v, %v", got, err)
	}
	for _, bad := range []string{"github.com/x/p TestA\n", "github.com/x/p # why\n", "a b c # why\n"} {
		if _, err := ParseAllowlist(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseAllowlist(%q) = %v, want an error naming line 1", bad, err)
		}
	}
}
