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

	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/ops/doctor"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/test/bintest"
	"github.com/weftnet/weft/test/kubetest"
	"github.com/weftnet/weft/test/netnstest"
)

// labBins are the packages of the programs `weft lab up` needs.
var labBins = []string{
	bintest.Module + "/cmd/weft",
	bintest.Module + "/cmd/weftd",
	bintest.Module + "/cmd/flannel",
	"github.com/containernetworking/plugins/plugins/main/bridge",
	"github.com/containernetworking/plugins/plugins/ipam/host-local",
	"github.com/containernetworking/plugins/plugins/main/loopback",
}

// buildBins builds the lab's programs into a temp dir (ours with -race when
// the test runs with it), or uses $WEFT_BIN_DIR when set (e.g. the output
// of `make`).
func buildBins(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("WEFT_BIN_DIR"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	start := time.Now()
	if err := bintest.Build(dir, labBins...); err != nil {
		t.Fatalf("building the lab's programs: %v", err)
	}
	t.Logf("built %d programs in %s (race detector: %v)", len(labBins), time.Since(start).Round(time.Millisecond), bintest.Race)
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
			if !procstat.Alive(pid) {
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
		netnstest.Unavailable(t, "TestLab needs root (network namespaces, links, iptables); run it as root, as CI does")
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
	for _, h := range st.Hosts {
		if err := bintest.CheckLog(filepath.Join(h.DataDir, "weftd.log")); err != nil {
			t.Error(err)
		}
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

	// And up works again, this time in nftables mode: the hosts keep their
	// rules in the flannel-ipv4 table, not in iptables.
	out = l.mustRun("up", "--hosts", "3", "--pods", "2", "--nftables", bin)
	if !strings.Contains(out, "every ping answered") {
		t.Fatalf("up --nftables after a killed up did not report a green matrix")
	}
	if out := l.mustRun("status"); !strings.Contains(out, "firewall nftables") {
		t.Errorf("status does not name the nftables mode:\n%s", out)
	}
	st, err = lab.LoadState(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	h := st.Hosts[0]
	if out, err := exec.Command("ip", "netns", "exec", h.NS, "nft", "list", "table", "ip", "flannel-ipv4").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "chain postrtg") {
		t.Errorf("%s in nftables mode: nft list table ip flannel-ipv4: %v\n%s", h.Name, err, out)
	}
	if out, _ := exec.Command("ip", "netns", "exec", h.NS, "iptables", "-w", "-t", "nat", "-S").CombinedOutput(); strings.Contains(string(out), "FLANNEL") {
		t.Errorf("%s in nftables mode has iptables chains:\n%s", h.Name, out)
	}
	// The doctor checks the tables in nftables mode: current, then a
	// chain flushed while the agent cannot restore it.
	dl := &doctorLab{testLab: l, st: st}
	if r, code := dl.doctor(t, h.Name); code != 0 || r.get(t, "firewall chains").Verdict != "Weft's nftables tables are present and current" {
		t.Errorf("doctor on %s in nftables mode: exit %d:\n%s", h.Name, code, r)
	}
	dl.pauseAgent(t, h.Name)
	dl.inHost(t, h.Name, "nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg")
	dl.expect(t, h.Name, nil, 1, "firewall chains", doctor.Problem, "chain ip flannel-ipv4 postrtg is not current: has 0 rules, want 6", "nft flush ruleset")
	l.mustRun("down")
	l.assertGone()
}

// TestLabIPv6 runs a dual-stack vxlan lab and an IPv6-only host-gw lab:
// green matrices in every family, check green, and down leaving nothing.
func TestLabIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestLabIPv6 needs root (network namespaces, links, iptables); run it as root, as CI does")
	}
	l := &testLab{
		t:        t,
		bin:      buildBins(t),
		prefix:   fmt.Sprintf("w6%d", os.Getpid()%100000),
		stateDir: filepath.Join(t.TempDir(), "lab"),
	}
	t.Cleanup(func() {
		if out, err := l.run("down"); err != nil {
			t.Errorf("cleanup: weft lab down: %v\n%s", err, out)
		}
	})
	bin := "--bin-dir=" + l.bin
	for _, tc := range []struct {
		args     []string
		families []string
	}{
		{[]string{"--dual-stack"}, []string{"IPv4:", "IPv6:"}},
		{[]string{"--ipv6", "--backend", "host-gw"}, nil},
	} {
		out := l.mustRun("up", append([]string{"--hosts", "3", "--pods", "1", bin}, tc.args...)...)
		if !strings.Contains(out, "every ping answered") {
			t.Fatalf("up %v did not report green matrices:\n%s", tc.args, out)
		}
		for _, f := range tc.families {
			if !strings.Contains(out, f) {
				t.Errorf("up %v shows no %s matrix:\n%s", tc.args, f, out)
			}
		}
		st, err := lab.LoadState(l.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range st.Hosts {
			for _, p := range h.Pods {
				if !p.Addr6.IsValid() || !st.IPv6Network.Contains(p.Addr6.Addr()) || p.Addr.IsValid() == st.NoIPv4 {
					t.Errorf("pod %s addresses %v %v (network %s, IPv6 %s, IPv6 only %v)", p.Name, p.Addr, p.Addr6, st.Network, st.IPv6Network, st.NoIPv4)
				}
			}
		}
		if out := l.mustRun("check"); !strings.Contains(out, "every ping answered") {
			t.Errorf("check %v is not green:\n%s", tc.args, out)
		}
		l.mustRun("down")
		l.assertGone()
	}
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
	// The doctor reads each host's device and peers through that host's
	// own UAPI socket.
	out = l.mustRun("doctor")
	if strings.Count(out, "flannel-wg exists, is up and matches the config") != 3 || strings.Count(out, "the kernel matches the leases of 2 peers") != 3 {
		t.Errorf("lab doctor does not find the 3 hosts' flannel-wg and peers in order:\n%s", out)
	}
	l.mustRun("down")
	l.assertGone()
}

// TestLabKube runs the lab in Kubernetes mode: a real kube-apiserver and
// kube-controller-manager (from scripts/kube-bins.sh's cache) give the
// hosts their podCIDRs; the matrix is green, status lists the Nodes'
// leases, and down leaves nothing, the control plane's processes included.
func TestLabKube(t *testing.T) {
	if os.Geteuid() != 0 {
		netnstest.Unavailable(t, "TestLabKube needs root (network namespaces, links, iptables); run it as root, as CI does")
	}
	l := &testLab{
		t:        t,
		bin:      buildBins(t),
		prefix:   fmt.Sprintf("wk%d", os.Getpid()%100000),
		stateDir: filepath.Join(t.TempDir(), "lab"),
	}
	t.Cleanup(func() {
		if out, err := l.run("down"); err != nil {
			t.Errorf("cleanup: weft lab down: %v\n%s", err, out)
		}
	})
	// Dual-stack: the controller manager gives each Node a podCIDR of
	// each family, and the matrix pings in both.
	out := l.mustRun("up", "--kube", "--dual-stack", "--kube-bin-dir", kubetest.BinDir(t), "--hosts", "3", "--pods", "1", "--bin-dir="+l.bin)
	if !strings.Contains(out, "every ping answered") || !strings.Contains(out, "kube-apiserver ready") || !strings.Contains(out, "IPv6:") {
		t.Fatalf("up --kube --dual-stack did not report a green matrix in both families")
	}
	st, err := lab.LoadState(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kube == nil || !st.Ready {
		t.Fatalf("state: kube %+v, ready %v", st.Kube, st.Ready)
	}
	for _, h := range st.Hosts {
		for _, p := range h.Pods {
			if !p.Addr.IsValid() || !p.Addr6.IsValid() || !st.IPv6Network.Contains(p.Addr6.Addr()) {
				t.Errorf("%s: pod %s has addresses %s and %s, want one in each family", h.Name, p.Name, p.Addr, p.Addr6)
			}
		}
	}
	out = l.mustRun("status")
	for _, want := range []string{"Kubernetes mode", "3 flannel Nodes", "kube-apiserver: pid", "kube-controller-manager: pid", "with its Node  ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "running"); n < 6 {
		t.Errorf("status shows %d running processes, want 6 (3 agents, etcd, apiserver, controller manager):\n%s", n, out)
	}
	for _, h := range st.Hosts {
		if err := bintest.CheckLog(filepath.Join(h.DataDir, "weftd.log")); err != nil {
			t.Error(err)
		}
	}
	// The doctor and teardown in Kubernetes mode share this control plane
	// (kube_doctor_test.go).
	kubeDoctor(t, &doctorLab{testLab: l, st: st})
	l.mustRun("down")
	l.assertGone()
}
