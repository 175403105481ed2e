// Package bintest builds the programs that end-to-end tests start, in one
// place: the project's own programs (weftd, weft, flannel) are built with the
// race detector when the tests themselves run with it, so that a data race in
// a process a test starts fails the test as one in the test binary would.
// Third-party programs (the reference CNI plugins, etcdctl) are built plain;
// the etcd and Kubernetes control planes the tests use are never built here.
package bintest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the import path of the project's module; packages under it are
// the project's own.
const Module = "github.com/weftnet/weft"

// Own reports whether pkg (an import path) is one of the project's packages.
func Own(pkg string) bool { return pkg == Module || strings.HasPrefix(pkg, Module+"/") }

// Build builds pkgs (import paths of main packages) into dir, each binary
// named after the last element of its path, with one `go build` for the
// project's own packages (with -race when Race) and one for the others.
func Build(dir string, pkgs ...string) error {
	var own, other []string
	for _, p := range pkgs {
		if strings.HasPrefix(p, ".") || strings.HasPrefix(p, "/") {
			return fmt.Errorf("building %q: give an import path, not a directory", p)
		}
		if Own(p) {
			own = append(own, p)
		} else {
			other = append(other, p)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if len(own) > 0 {
		if err := goBuild(root, dir, Race, own); err != nil {
			return err
		}
	}
	if len(other) > 0 {
		if err := goBuild(root, dir, false, other); err != nil {
			return err
		}
	}
	return nil
}

// goBuild runs one `go build -o dir/ pkgs...` in the module root. A race
// build needs cgo; a plain build is static, as `make` builds it.
func goBuild(root, dir string, race bool, pkgs []string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if race {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	args = append(args, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	return filepath.Dir(mod), nil
}

// raceMarker starts every report of the race detector.
var raceMarker = []byte("WARNING: DATA RACE")

// RaceReports returns an error quoting the first data race reported in out
// (the output of a program this package built), or nil.
func RaceReports(what string, out []byte) error {
	i := bytes.Index(out, raceMarker)
	if i < 0 {
		return nil
	}
	report := out[i:]
	if end := bytes.Index(report, []byte("\n==================")); end > 0 {
		report = report[:end]
	}
	return fmt.Errorf("%s: the race detector reported %d data race(s); the first:\n%s", what, bytes.Count(out, raceMarker), report)
}

// CheckLog reads the log file of a program this package built and returns
// RaceReports for it (nil when the file cannot be read: the caller checks
// its own logs).
func CheckLog(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return RaceReports(path, b)
}
