package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/test/doctest"
)

// The files that document or set weftd's flags, relative to this package.
const (
	configDoc = "../../Documentation/configuration.md"
	envFile   = "../../dist/systemd/weftd.env"
	manifest  = "../../dist/kubernetes/weft.yaml"
)

// envName is the FLANNELD_* variable of a flag, as parseOptions reads it.
func envName(flagName string) string {
	return "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// docRow is one row of the flag table in configuration.md.
type docRow struct {
	env, def string
}

// flagTable reads the table whose header starts with "| Flag |" from the
// configuration reference, keyed by flag name.
func flagTable(t *testing.T) map[string]docRow {
	t.Helper()
	data, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docRow{}
	for _, cells := range doctest.Table(string(data), "| Flag |") {
		if len(cells) < 4 {
			t.Fatalf("flag table row %q has %d cells, want 4", cells, len(cells))
		}
		name := strings.TrimPrefix(code(t, cells[0]), "-")
		if _, dup := rows[name]; dup {
			t.Errorf("flag -%s documented twice", name)
		}
		rows[name] = docRow{env: code(t, cells[1]), def: cells[2]}
	}
	if len(rows) == 0 {
		t.Fatalf("%s has no flag table (a header starting with \"| Flag |\")", configDoc)
	}
	return rows
}

// code returns the text of a table cell that is one `code span`.
func code(t *testing.T, cell string) string {
	t.Helper()
	c, ok := doctest.Code(cell)
	if !ok {
		t.Fatalf("table cell %q is not a single `code` span", cell)
	}
	return c
}

// TestConfigDocFlags walks weftd's flag set and checks that every flag is in
// the configuration reference with its FLANNELD_* name and its default, and
// that the reference documents no flag weftd does not have.
func TestConfigDocFlags(t *testing.T) {
	rows := flagTable(t)
	fs := newFlagSet(&options{}, io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("flag -%s (default %q) is missing from %s", f.Name, f.DefValue, configDoc)
			return
		}
		delete(rows, f.Name)
		if row.env != envName(f.Name) {
			t.Errorf("flag -%s: documented variable %s, want %s", f.Name, row.env, envName(f.Name))
		}
		want := "none"
		if f.DefValue != "" {
			want = "`" + f.DefValue + "`"
		}
		if row.def != want {
			t.Errorf("flag -%s: documented default %s, want %s", f.Name, row.def, want)
		}
	})
	for name := range rows {
		t.Errorf("%s documents -%s, which weftd does not have", configDoc, name)
	}
}

// TestEnvFileExample checks the example /etc/weft/weftd.env: every
// FLANNELD_* variable in it, set or commented out, names a weftd flag, and
// the ones it sets are accepted by weftd's own option parsing.
func TestEnvFileExample(t *testing.T) {
	data, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	newFlagSet(&options{}, io.Discard).VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		commented := strings.HasPrefix(line, "#")
		name, val, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if !ok || strings.ContainsAny(name, " \t") || !strings.HasPrefix(name, "FLANNELD_") {
			continue
		}
		if !known[name] {
			t.Errorf("%s sets %s, which is no weftd flag", envFile, name)
		}
		if !commented {
			env[name] = val
		}
	}
	if len(env) == 0 {
		t.Fatalf("%s sets no FLANNELD_* variable", envFile)
	}
	if _, err := parseOptions(nil, func(k string) string { return env[k] }, io.Discard); err != nil {
		t.Errorf("weftd rejects %s: %v", envFile, err)
	}
}

// TestManifestArgs checks that the DaemonSet's weftd container gives weftd
// arguments and FLANNELD_* variables that weftd's own parsing accepts, and
// that its probes point at the -healthz-port weftd then listens on.
func TestManifestArgs(t *testing.T) {
	for _, manifest := range []string{manifest, strings.Replace(manifest, "weft.yaml", "weft-kube.yaml", 1)} {
		t.Run(filepath.Base(manifest), func(t *testing.T) { checkManifestArgs(t, manifest) })
	}
}

func checkManifestArgs(t *testing.T, manifest string) {
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var ds *appsv1.DaemonSet
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte("\nkind: DaemonSet")) {
			continue
		}
		ds = &appsv1.DaemonSet{}
		if err := yaml.UnmarshalStrict(doc, ds); err != nil {
			t.Fatal(err)
		}
	}
	if ds == nil {
		t.Fatalf("%s has no DaemonSet", manifest)
	}
	var found bool
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name != "weftd" {
			continue
		}
		found = true
		env := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil {
				env[e.Name] = "from-" + e.ValueFrom.FieldRef.FieldPath // NODE_NAME etc., filled in by the kubelet
				continue
			}
			env[e.Name] = e.Value
		}
		o, err := parseOptions(c.Args, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("weftd rejects the DaemonSet's arguments %q: %v", c.Args, err)
		}
		if o.healthzAddr() == "" {
			t.Fatal("the DaemonSet runs weftd without a health server, but probes it")
		}
		for _, p := range []string{"liveness", "readiness"} {
			probe := c.LivenessProbe
			if p == "readiness" {
				probe = c.ReadinessProbe
			}
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.IntValue() != o.node.HealthzPort {
				t.Errorf("%s probe %+v does not target -healthz-port %d", p, probe, o.node.HealthzPort)
			}
		}
	}
	if !found {
		t.Fatal("no weftd container in the DaemonSet")
	}
}
