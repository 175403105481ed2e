package version_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeStampsVersion builds weftd the way a release does (make, with
// this machine's GOFLAGS, which may include -buildvcs=false) and checks that
// `weftd -version` reports `git describe --always --dirty` of this checkout:
// a version containing "devel" is not stamped.
func TestMakeStampsVersion(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		t.Fatalf("git describe in %s: %v (the test needs the git checkout it stamps from)", root, err)
	}
	want := strings.TrimSpace(string(out))
	if want == "" || strings.Contains(want, "devel") {
		t.Fatalf("git describe printed %q, which cannot tell a stamped build from an unstamped one", want)
	}

	bin := t.TempDir()
	weftd := filepath.Join(bin, "weftd")
	if out, err := exec.Command("make", "-C", root, "BIN="+bin, weftd).CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", weftd, err, out)
	}
	out, err = exec.Command(weftd, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("weftd -version: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "weftd "+want {
		t.Errorf("weftd -version = %q, want %q (the Makefile's -X stamp of git describe)", got, "weftd "+want)
	}
}
