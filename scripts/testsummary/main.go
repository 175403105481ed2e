// Command testsummary reads the output of `go test -json` and prints what a
// CI log needs: each package as it finishes, the output of every failed test,
// the number of tests run, passed, failed and skipped, the skipped tests with
// their reasons, and, last, go test's own per-package summary lines
// ("ok  <pkg>  1.2s", "FAIL <pkg> 0.3s") followed by "FAIL" when anything
// failed, as plain `go test` ends.
//
// It exits non-zero when a test or package failed, when the stream holds no
// package result, or when a test was skipped that the allowlist does not
// name (unless -allow-skips): in CI every privileged test must run.
//
// Usage:
//
//	go test -json ./... 2>&1 | testsummary [-allowlist scripts/test-skips.txt] [-allow-skips]
//
// Lines that are not JSON (go command errors) are printed as they come.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
)

func main() {
	allowlist := flag.String("allowlist", "", "file naming the tests that may be skipped, one `<package> <test> # reason` a line")
	allowSkips := flag.Bool("allow-skips", false, "report skipped tests without failing (runs that are not CI)")
	flag.Parse()
	var allowed map[string]string
	if *allowlist != "" {
		f, err := os.Open(*allowlist)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
			os.Exit(2)
		}
		allowed, err = ParseAllowlist(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %s: %v\n", *allowlist, err)
			os.Exit(2)
		}
	}
	s := NewSummary(os.Stdout)
	if err := s.Read(bufio.NewReader(os.Stdin)); err != nil {
		fmt.Fprintf(os.Stderr, "testsummary: reading go test output: %v\n", err)
		os.Exit(2)
	}
	if !s.Report(allowed, *allowSkips) {
		os.Exit(1)
	}
}
