package dist_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/doctest"
)

const configDoc = "../Documentation/configuration.md"

// docTable returns the rows of the Markdown table in configuration.md whose
// header row starts with header, each as its trimmed cells.
func docTable(t *testing.T, header string) [][]string {
	t.Helper()
	data, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := doctest.Table(string(data), header)
	if len(rows) == 0 {
		t.Fatalf("%s has no table with header %q", configDoc, header)
	}
	return rows
}

// literal returns the content of a cell that is one `code span`.
func literal(cell string) (string, bool) { return doctest.Code(cell) }

// TestConfigDocFields checks the network config table: every field of
// subnet.Config is documented, every documented field is one ParseConfig
// knows, and every default written as a literal is what ParseConfig fills
// in.
func TestConfigDocFields(t *testing.T) {
	rows := docTable(t, "| Field |")
	// A config with the IPv6 network given (but not enabled), so that the
	// IPv6 defaults are filled in too.
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(cfg).Elem()
	documented := map[string]bool{}
	for _, r := range rows {
		name, ok := literal(r[0])
		if !ok {
			t.Fatalf("field cell %q is not a `code` span", r[0])
		}
		documented[name] = true
		if name != "Network" {
			// null is a valid JSON value for every field; an unknown
			// field is reported by name.
			_, unknown, err := subnet.ParseConfig(fmt.Appendf(nil, `{"Network":"10.0.0.0/16",%q:null}`, name))
			if err != nil {
				t.Errorf("field %s: %v", name, err)
			} else if len(unknown) > 0 {
				t.Errorf("documented field %s is unknown to ParseConfig", name)
			}
		}
		def, ok := literal(r[2])
		if !ok {
			continue // prose: derived, required or none
		}
		f := v.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("field %s has a documented default but no subnet.Config field", name)
			continue
		}
		got := fmt.Sprint(f.Interface())
		if raw, ok := f.Interface().(json.RawMessage); ok {
			got = string(raw)
		}
		if got != def {
			t.Errorf("field %s: documented default %s, ParseConfig gives %s", name, def, got)
		}
	}
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		if name == "BackendType" {
			continue // Backend.Type, documented with Backend
		}
		if !documented[name] {
			t.Errorf("network config field %s is missing from %s", name, configDoc)
		}
	}
}

// TestConfigDocDerivedDefaults parses a config holding only each example
// network and compares the derived SubnetLen, SubnetMin and SubnetMax with
// the documented ones.
func TestConfigDocDerivedDefaults(t *testing.T) {
	rows := docTable(t, "| `Network` | `SubnetLen` |")
	for _, r := range rows {
		var lit [4]string
		for i := range lit {
			s, ok := literal(r[i])
			if !ok {
				t.Fatalf("row %q: cell %q is not a `code` span", r, r[i])
			}
			lit[i] = s
		}
		t.Run(lit[0], func(t *testing.T) {
			cfg, _, err := subnet.ParseConfig(fmt.Appendf(nil, `{"Network":%q}`, lit[0]))
			if err != nil {
				t.Fatal(err)
			}
			got := [4]string{cfg.Network.String(), fmt.Sprint(cfg.SubnetLen), cfg.SubnetMin.String(), cfg.SubnetMax.String()}
			if got != lit {
				t.Errorf("documented %v, ParseConfig gives %v", lit, got)
			}
			if cfg.BackendType != "vxlan" {
				t.Errorf("backend %q without a Backend, documented vxlan", cfg.BackendType)
			}
		})
	}
}
