package dist_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/agent"
)

// TestMetricsDoc checks that Documentation/metrics.md lists exactly the
// weft_* metrics that the agent registers.
func TestMetricsDoc(t *testing.T) {
	m := agent.NewMetrics()
	m.ObserveEtcd("get", 0) // a vector is gathered once it has a series
	m.BackendInfo.WithLabelValues("vxlan", "kernel").Set(1)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "weft_") {
			registered = append(registered, f.GetName())
		}
	}
	doc, err := os.ReadFile("../Documentation/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(weft_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	for _, n := range registered {
		if !slices.Contains(documented, n) {
			t.Errorf("metric %s is missing from metrics.md", n)
		}
	}
	for _, n := range documented {
		if !slices.Contains(registered, n) {
			t.Errorf("metrics.md documents %s, which the agent does not register", n)
		}
	}
}
