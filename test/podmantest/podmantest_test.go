package podmantest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/netnstest"
)

// TestPrivate checks that podman really runs with the test's own
// configuration (CNI backend, runc, cgroupfs, vfs storage under the test's
// directory) and without warnings about it, runs the imported image, and
// that cleanup leaves no image or container behind.
func TestPrivate(t *testing.T) {
	Require(t)
	ns := netnstest.NewNS(t, "pm")
	var p *Podman
	t.Run("configured", func(t *testing.T) {
		p = New(t, ns, t.TempDir())
		cmd := p.command("info", "--format",
			"{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}} {{.Store.GraphRoot}} {{.Store.RunRoot}}")
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("podman info: %v %s", err, stderr)
		}
		want := strings.Join([]string{"cni", "runc", "cgroupfs", "vfs", filepath.Join(p.Dir, "root"), filepath.Join(p.Dir, "runroot")}, " ")
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("podman info: %q, want %q", got, want)
		}
		cmd = p.command("run", "--rm", "--network", "none", Image, "cat", "/www/index.html")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != "weft-ok" {
			t.Fatalf("running the image: %v %q %s", err, out, stderr.String())
		}
		if strings.Contains(stderr.String(), "level=warning") || strings.Contains(stderr.String(), "level=error") {
			t.Errorf("podman warned about its configuration:\n%s", stderr.String())
		}
	})
	// The subtest's cleanup has run: nothing of it is left.
	if p == nil {
		t.FailNow()
	}
	if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
		t.Errorf("the podman directory %s is left: %v", p.Dir, err)
	}
	for _, d := range p.made {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s, which the test's podman created, is left: %v", d, err)
		}
	}
}
