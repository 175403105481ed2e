package report

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// benchSource is what the _test.go files of one package define: the
// top-level benchmark functions, and the string literals that can name a
// metric: those inside a b.ReportMetric call's unit (for a unit built as
// x+"-add-ms", the literal) and those in a benchmark function's body (a
// table of metric names).
type benchSource struct {
	funcs map[string]bool
	units []string
}

func readBenchSource(t *testing.T, dir string) *benchSource {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in %s (%v)", dir, err)
	}
	src := &benchSource{funcs: map[string]bool{}}
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if n.Recv == nil && strings.HasPrefix(n.Name.Name, "Benchmark") && n.Body != nil {
					src.funcs[n.Name.Name] = true
					src.addLiterals(n.Body)
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "ReportMetric" || len(n.Args) != 2 {
					return true
				}
				src.addLiterals(n.Args[1])
			}
			return true
		})
	}
	return src
}

func (s *benchSource) addLiterals(n ast.Node) {
	ast.Inspect(n, func(m ast.Node) bool {
		if lit, ok := m.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if u, err := strconv.Unquote(lit.Value); err == nil && u != "" {
				s.units = append(s.units, u)
			}
		}
		return true
	})
}

// reports says whether the source can report unit: a literal that is the
// unit, or its tail after a computed prefix ("-add-ms"); ns/op always.
func (s *benchSource) reports(unit string) bool {
	if unit == "ns/op" {
		return true
	}
	for _, u := range s.units {
		if u == unit || strings.HasPrefix(u, "-") && strings.HasSuffix(unit, u) {
			return true
		}
	}
	return false
}

// TestSpecsNameWhatTheBenchmarksReport keeps the row specs and the
// benchmarks together: every benchmark a row names exists in its package,
// and every metric it reads (figure, baseline, notes) is reported there,
// so that no row turns into "not measured" after a rename.
func TestSpecsNameWhatTheBenchmarksReport(t *testing.T) {
	sources := map[string]*benchSource{}
	for _, s := range Specs {
		pkg, ok := Packages[s.File]
		if !ok {
			t.Errorf("row %q: file %q has no package in Packages", s.What, s.File)
			continue
		}
		src := sources[pkg]
		if src == nil {
			src = readBenchSource(t, filepath.Join("..", "..", pkg))
			sources[pkg] = src
		}
		type metric struct{ name, unit string }
		ms := []metric{{s.Name, s.Unit}}
		if s.BaseName != "" {
			ms = append(ms, metric{s.BaseName, s.BaseUnit})
		}
		for _, n := range s.Notes {
			ms = append(ms, metric{s.Name, n.Unit})
		}
		for _, m := range ms {
			fn, _, _ := strings.Cut(m.name, "/")
			if !src.funcs[fn] {
				t.Errorf("row %q: %s has no func %s", s.What, pkg, fn)
			}
			if !src.reports(m.unit) {
				t.Errorf("row %q: %s reports no metric %q", s.What, pkg, m.unit)
			}
		}
	}
}
