package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/ops/lab"
)

// labBins are the programs `weft lab up` needs, with their packages.
var labBins = map[string]string{
	"weft":       "./cmd/weft",
	"weftd":      "./cmd/weftd",
	"flannel":    "./cmd/flannel",
	"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	"loopback":   "github.com/containernetworking/plugins/plugins/main/loopback",
}

// buildBins builds the lab's programs into a temp dir, or uses
// $WEFT_BIN_DIR when set (e.g. the output of `make`).
func buildBins(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("WEFT_BIN_DIR"); dir != "" {
		return dir
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, pkg := range labBins {
		args = append(args, pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the lab's programs: %v\n%s", err, out)
	}
	t.Logf("built %d programs in %s", len(labBins), time.Since(start).Round(time.Millisecond))
	return dir
}

// testLab is one lab of the test, with its own prefix and state dir.
type testLab struct {
	t        *testing.T
	bin      string
	prefix   string
	stateDir string
}

func (l *testLab) args(verb string, extra ...string) []string {
	return append([]string{"lab", verb, "--state-dir", l.stateDir, "--prefix", l.prefix}, extra...)
}

// run runs `weft lab <verb>` and returns its output and error.
func (l *testLab) run(verb string, extra ...string) (string, error) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(l.bin, "weft"), l.args(verb, extra...)...).CombinedOutput()
	return string(out), err
}

func (l *testLab) mustRun(verb string, extra ...string) string {
	l.t.Helper()
	start := time.Now()
	out, err := l.run(verb, extra...)
	if err != nil {
		l.t.Fatalf("weft lab %s: %v\n%s", verb, err, out)
	}
	l.t.Logf("weft lab %s (%s):\n%s", verb, time.Since(start).Round(time.Millisecond), out)
	return out
}

// assertGone lists namespaces, links, processes, iptables rules and files
// and fails on any that belongs to the lab.
func (l *testLab) assertGone() {
	l.t.Helper()
	var left []string
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), l.prefix+"-") {
				left = append(left, "namespace "+e.Name())
			}
		}
	}
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		l.t.Fatalf("ip link show: %v", err)
	}
	for _, line := range strings.Split(string(links), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], l.prefix+"-") {
			left = append(left, "link "+strings.TrimSuffix(f[1], ":"))
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(l.stateDir)) && pid != os.Getpid() {
			if st, err := os.ReadFile("/proc/" + p.Name() + "/stat"); err == nil && bytes.Contains(st, []byte(") Z")) {
				continue // exited, waiting for its parent to reap it
			}
			left = append(left, fmt.Sprintf("process %d %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	rules, err := exec.Command("iptables", "-S").Output()
	if err != nil {
		l.t.Fatalf("iptables -S: %v", err)
	}
	if strings.Contains(string(rules), "weft-lab:"+l.prefix) {
		left = append(left, "iptables rule:\n"+string(rules))
	}
	if _, err := os.Stat(l.stateDir); !os.IsNotExist(err) {
		left = append(left, "state dir "+l.stateDir)
	}
	if len(left) > 0 {
		l.t.Errorf("the lab left behind:\n  %s", strings.Join(left, "\n  "))
	}
}

// TestLab runs the whole lab: up with 3 hosts and 2 pods each, a green ping
// matrix, status and check, a refused second up, down leaving nothing, and
// up again after an up killed with SIGKILL in the middle.
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("TestLab needs root (network namespaces, links, iptables); run it as root, as CI does")
	}
	l := &testLab{
		t:        t,
		bin:      buildBins(t),
		prefix:   fmt.Sprintf("wt%d", os.Getpid()%100000),
		stateDir: filepath.Join(t.TempDir(), "lab"),
	}
	t.Cleanup(func() {
		if out, err := l.run("down"); err != nil {
			t.Errorf("cleanup: weft lab down: %v\n%s", err, out)
		}
	})
	bin := "--bin-dir=" + l.bin

	// up, green.
	start := time.Now()
	out := l.mustRun("up", "--hosts", "3", "--pods", "2", bin)
	t.Logf("lab up 3x2 took %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(out, "every ping answered") {
		t.Fatalf("up did not report a green matrix")
	}
	st, err := lab.LoadState(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || len(st.Hosts) != 3 {
		t.Fatalf("state: ready %v, %d hosts", st.Ready, len(st.Hosts))
	}
	for _, h := range st.Hosts {
		if len(h.Pods) != 2 {
			t.Errorf("%s has %d pods, want 2", h.Name, len(h.Pods))
		}
		for _, p := range h.Pods {
			if !p.Addr.IsValid() || !st.Network.Contains(p.Addr.Addr()) {
				t.Errorf("pod %s address %v is not in %s", p.Name, p.Addr, st.Network)
			}
		}
	}

	// A second up is refused, and leaves the first alone.
	if out, err := l.run("up", bin); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("second up: err %v, output:\n%s\nwant a refusal saying a lab is already running", err, out)
	}
	out = l.mustRun("status")
	if !strings.Contains(out, "3 leases") || strings.Count(out, "running") < 4 {
		t.Errorf("status does not show 3 leases and 4 running processes:\n%s", out)
	}
	out = l.mustRun("check")
	if !strings.Contains(out, "every ping answered") {
		t.Errorf("check is not green:\n%s", out)
	}

	// down removes everything, and can run again.
	l.mustRun("down")
	l.assertGone()
	l.mustRun("down")
	l.assertGone()

	// up killed with SIGKILL once its agents are starting, then down.
	cmd := exec.Command(filepath.Join(l.bin, "weft"), l.args("up", "--hosts", "3", "--pods", "2", bin)...)
	var upOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &upOut, &upOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(lab.StatePath(l.stateDir))
		var s lab.State
		if err == nil && json.Unmarshal(b, &s) == nil && len(s.Procs) >= 3 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("up never started its agents:\n%s", upOut.String())
	}
	t.Logf("killed up with SIGKILL after:\n%s", upOut.String())
	if out, err := l.run("up", bin); err == nil || !strings.Contains(out, "run `weft lab down` first") {
		t.Errorf("up over a killed up: err %v, output:\n%s\nwant a refusal asking for down", err, out)
	}
	l.mustRun("down")
	l.assertGone()

	// And up works again.
	out = l.mustRun("up", "--hosts", "3", "--pods", "2", bin)
	if !strings.Contains(out, "every ping answered") {
		t.Fatalf("up after a killed up did not report a green matrix")
	}
	l.mustRun("down")
	l.assertGone()
}

// TestLabWireGuard runs a lab on the wireguard backend: a green matrix,
// each host with a key of its own, and the engine shown by status.
func TestLabWireGuard(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("TestLabWireGuard needs root (network namespaces, links, iptables); run it as root, as CI does")
	}
	l := &testLab{
		t:        t,
		bin:      buildBins(t),
		prefix:   fmt.Sprintf("wg%d", os.Getpid()%100000),
		stateDir: filepath.Join(t.TempDir(), "lab"),
	}
	t.Cleanup(func() {
		if out, err := l.run("down"); err != nil {
			t.Errorf("cleanup: weft lab down: %v\n%s", err, out)
		}
	})
	out := l.mustRun("up", "--hosts", "3", "--pods", "1", "--backend", "wireguard", "--bin-dir="+l.bin)
	if !strings.Contains(out, "every ping answered") {
		t.Fatalf("up did not report a green matrix")
	}
	st, err := lab.LoadState(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, h := range st.Hosts {
		b, err := os.ReadFile(filepath.Join(h.DataDir, "wgkey"))
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if other, dup := keys[string(b)]; dup {
			t.Errorf("%s and %s share a WireGuard key", other, h.Name)
		}
		keys[string(b)] = h.Name
		if _, err := os.Stat(filepath.Join(h.DataDir, "wireguard", "flannel-wg.sock")); err != nil {
			t.Errorf("%s: UAPI socket: %v", h.Name, err)
		}
	}
	out = l.mustRun("status")
	if !strings.Contains(out, "backend wireguard") || strings.Count(out, "userspace") != 3 {
		t.Errorf("status does not show 3 wireguard leases on the userspace engine:\n%s", out)
	}
	l.mustRun("down")
	l.assertGone()
}
