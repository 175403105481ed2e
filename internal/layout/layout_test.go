package layout

import (
	"errors"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// pkg is one package of the main module, as go/build reads it (non-test
// files only).
type pkg struct {
	rel string // directory relative to the module root, "/"-separated
	*build.Package
}

// packages reads every package of the main module below the repository
// root, skipping nested modules (tools/kube) and testdata.
func packages(t *testing.T) []pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx := build.Default
	ctx.GOOS = "linux"
	var out []pkg
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root {
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "bin" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		p, err := ctx.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out = append(out, pkg{rel: filepath.ToSlash(rel), Package: p})
		return nil
	})
	if err != nil {
		t.Fatalf("reading the packages: %v", err)
	}
	if len(out) < 20 {
		t.Fatalf("found only %d packages below %s: the walk is broken", len(out), root)
	}
	return out
}

// under reports whether rel is dir or inside it.
func under(rel string, dirs ...string) bool {
	for _, d := range dirs {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

// importsAny returns the imports of p that are one of libs or inside one.
func importsAny(p pkg, libs []string) []string {
	var hits []string
	for _, imp := range p.Imports {
		if under(imp, libs...) {
			hits = append(hits, imp)
		}
	}
	return hits
}

// kernelLibs are the kernel libraries that only the kernel seam imports.
var kernelLibs = []string{
	"github.com/vishvananda/netlink",
	"github.com/vishvananda/netns",
	"github.com/coreos/go-iptables",
	"sigs.k8s.io/knftables",
}

// TestKernelSeam: in product code (non-test files outside bench/ and the
// test support in test/), only kernel/ imports netlink, netns or
// go-iptables. Tests may use them to observe the kernel.
func TestKernelSeam(t *testing.T) {
	seamUses := 0
	for _, p := range packages(t) {
		hits := importsAny(p, kernelLibs)
		switch {
		case under(p.rel, "kernel"):
			seamUses += len(hits)
		case under(p.rel, "bench", "test"):
		case len(hits) > 0:
			t.Errorf("%s imports %s: only kernel/ may (add what it needs to kernel/netlinkx, kernel/iptables or kernel/nsenter)", p.rel, strings.Join(hits, ", "))
		}
	}
	if seamUses == 0 {
		t.Error("no package under kernel/ imports a kernel library: the import listing is broken")
	}
}

// etcdOwners are the packages allowed to import the etcd libraries in
// product code: the store, and the lab, which embeds an etcd server and
// waits for it before it writes the network config.
var etcdOwners = []string{"subnet/etcd", "ops/lab"}

// TestLeaseKeysInOneStore: in product code (non-test files outside test/),
// only subnet/etcd reads or writes lease keys. Two rules make it checkable:
// only etcdOwners import go.etcd.io/etcd (so nobody else can reach etcd
// except through the store; bench/ may, to time raw etcd calls as
// baselines), and no string literal outside subnet/etcd holds the lease key
// schema ("subnets/", the folder below the prefix), so that the lab and the
// benchmarks, which may talk to etcd, cannot build lease keys.
func TestLeaseKeysInOneStore(t *testing.T) {
	storeUses := 0
	for _, p := range packages(t) {
		if under(p.rel, "test") {
			continue
		}
		hits := importsAny(p, []string{"go.etcd.io/etcd"})
		if p.rel == "subnet/etcd" {
			storeUses += len(hits)
		} else if len(hits) > 0 && !slices.Contains(etcdOwners, p.rel) && !under(p.rel, "bench") {
			t.Errorf("%s imports %s: only %s may; reach the leases through subnet/etcd's Store", p.rel, strings.Join(hits, ", "), strings.Join(etcdOwners, " and "))
		}
		if p.rel == "subnet/etcd" {
			continue
		}
		for _, name := range p.GoFiles {
			for _, lit := range keyLiterals(t, filepath.Join(p.Dir, name)) {
				t.Errorf("%s/%s: string %s builds lease keys: only subnet/etcd may", p.rel, name, lit)
			}
		}
	}
	if storeUses == 0 {
		t.Error("subnet/etcd imports no etcd package: the import listing is broken")
	}
}

// keyLiterals returns the string literals of a Go file that hold the lease
// key schema.
func keyLiterals(t *testing.T, path string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	var hits []string
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		if v, err := strconv.Unquote(lit.Value); err == nil && strings.Contains(v, "subnets/") {
			hits = append(hits, lit.Value)
		}
		return true
	})
	return hits
}

func TestKeyLiterals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.go")
	src := "package x\n// a comment naming <prefix>/subnets/ is fine\nconst a, b = \"/coreos.com/network/subnets/\", `subnets/`\nconst c = \"%s/subnets\\n\"\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := keyLiterals(t, path)
	if want := []string{`"/coreos.com/network/subnets/"`, "`subnets/`"}; !slices.Equal(got, want) {
		t.Errorf("keyLiterals = %q, want %q", got, want)
	}
}

// TestUnderContains checks the path matcher the rules rely on.
func TestUnderContains(t *testing.T) {
	for _, tc := range []struct {
		rel  string
		dirs []string
		want bool
	}{
		{"kernel", []string{"kernel"}, true},
		{"kernel/netlinkx", []string{"kernel"}, true},
		{"kernelx", []string{"kernel"}, false},
		{"github.com/vishvananda/netlink/nl", kernelLibs, true},
		{"github.com/vishvananda/netlinkfoo", kernelLibs, false},
	} {
		if got := under(tc.rel, tc.dirs...); got != tc.want {
			t.Errorf("under(%q, %v) = %v, want %v", tc.rel, tc.dirs, got, tc.want)
		}
	}
}

// kubeOwners are the packages allowed to import the Kubernetes client
// libraries (k8s.io/...) in product code: the Kubernetes store, the lab
// (it registers a Node per host as a kubelet would) and weftd (it routes
// client-go's klog into its slog logger). Everything else, the doctor,
// teardown and the CLI included, reaches the apiserver through
// subnet/kube's API and functions.
var kubeOwners = []string{"subnet/kube", "ops/lab", "cmd/weftd"}

// TestKubeClientInOneStore: in product code (non-test files outside test/
// and bench/), only kubeOwners import k8s.io packages.
func TestKubeClientInOneStore(t *testing.T) {
	storeUses := 0
	for _, p := range packages(t) {
		if under(p.rel, "test", "bench") {
			continue
		}
		hits := importsAny(p, []string{"k8s.io"})
		if p.rel == "subnet/kube" {
			storeUses += len(hits)
		} else if len(hits) > 0 && !slices.Contains(kubeOwners, p.rel) {
			t.Errorf("%s imports %s: only %s may; reach the apiserver through subnet/kube", p.rel, strings.Join(hits, ", "), strings.Join(kubeOwners, ", "))
		}
	}
	if storeUses == 0 {
		t.Error("subnet/kube imports no k8s.io package: the import listing is broken")
	}
}
