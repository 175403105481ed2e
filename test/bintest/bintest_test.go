package bintest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The project's own program is built with -race exactly when this test
// binary is, and a third-party one never.
func TestBuildRaceFollowsTests(t *testing.T) {
	dir := t.TempDir()
	if err := Build(dir, Module+"/cmd/flannel", "github.com/containernetworking/plugins/plugins/main/loopback"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin  string
		race bool
	}{{"flannel", Race}, {"loopback", false}} {
		out, err := exec.Command("go", "version", "-m", filepath.Join(dir, tc.bin)).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v\n%s", tc.bin, err, out)
		}
		if got := strings.Contains(string(out), "-race=true"); got != tc.race {
			t.Errorf("%s built with -race: %v, want %v\n%s", tc.bin, got, tc.race, out)
		}
	}
}

func TestBuildRefusesDirectories(t *testing.T) {
	if err := Build(t.TempDir(), "./cmd/weftd"); err == nil || !strings.Contains(err.Error(), `"./cmd/weftd"`) {
		t.Errorf("Build(./cmd/weftd) = %v, want an error naming it", err)
	}
}

func TestRaceReports(t *testing.T) {
	if err := RaceReports("weftd", []byte("level=INFO msg=ready\n")); err != nil {
		t.Errorf("clean log: %v", err)
	}
	log := "x\n==================\nWARNING: DATA RACE\nWrite at 0x00c by goroutine 7:\n  main.f()\n==================\nmore\n"
	err := RaceReports("weftd", []byte(log))
	if err == nil || !strings.Contains(err.Error(), "Write at 0x00c by goroutine 7") || !strings.Contains(err.Error(), "1 data race") {
		t.Errorf("RaceReports = %v, want the report quoted", err)
	}
}
