package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// RenderText writes the report for a person: one line per check (status,
// check, verdict), and under a problem or warning its details, cause and
// fix; then a summary line with the exit code.
func RenderText(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "weft doctor: %s\n", r.Node)
	counts := map[Status]int{}
	for _, res := range r.Results {
		counts[res.Status]++
		fmt.Fprintf(&b, "%-8s %-31s %s\n", label(res.Status), res.Check, res.Verdict)
		if res.Status == OK || res.Status == Skipped {
			continue
		}
		for _, d := range res.Details {
			fmt.Fprintf(&b, "%41s- %s\n", "", d)
		}
		if res.Cause != "" {
			fmt.Fprintf(&b, "%41scause: %s\n", "", res.Cause)
		}
		for i, f := range res.Fix {
			head := "fix:   "
			if i > 0 {
				head = "       "
			}
			fmt.Fprintf(&b, "%41s%s%s\n", "", head, f)
		}
	}
	verdict := "healthy"
	switch r.ExitCode() {
	case 1:
		verdict = "problems found"
	case 2:
		verdict = "could not look at everything"
	}
	fmt.Fprintf(&b, "%s: %d problems, %d warnings, %d could not look, %d ok, %d skipped (exit %d)\n",
		verdict, counts[Problem], counts[Warn], counts[Unknown], counts[OK], counts[Skipped], r.ExitCode())
	_, err := io.WriteString(w, b.String())
	return err
}

func label(s Status) string {
	switch s {
	case Problem:
		return "PROBLEM"
	case Unknown:
		return "UNKNOWN"
	case Warn:
		return "warn"
	}
	return string(s)
}

// jsonReport is the JSON form: the report with its exit code.
type jsonReport struct {
	Node     string   `json:"node"`
	Healthy  bool     `json:"healthy"`
	ExitCode int      `json:"exitCode"`
	Checks   []Result `json:"checks"`
}

// RenderJSON writes the report for a machine.
func RenderJSON(w io.Writer, r *Report) error {
	res := r.Results
	if res == nil {
		res = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(jsonReport{Node: r.Node, Healthy: r.ExitCode() == 0, ExitCode: r.ExitCode(), Checks: res})
}

// count renders n with the noun in singular or plural ("1 pod", "2 pods").
func count(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
