package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/nsenter"
)

// run runs a command and returns its combined output; the error quotes the
// command and its output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// nsPath returns the bind-mount path of a named namespace.
func nsPath(name string) string { return filepath.Join("/var/run/netns", name) }

// nsExists reports whether the named namespace exists.
func nsExists(name string) bool {
	_, err := os.Stat(nsPath(name))
	return err == nil
}

// inNS runs fn on a locked OS thread switched into the named namespace (see
// nsenter.DoNamed).
func inNS(name string, fn func() error) error { return nsenter.DoNamed(name, fn) }

// startDetached starts argv in a new session with stdout and stderr
// appended to logPath, and returns its PID and a channel closed when it
// exits while the caller still runs. The process outlives the caller.
func startDetached(argv []string, logPath string, env []string) (int, <-chan struct{}, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, nil, fmt.Errorf("creating log dir for %s: %w", logPath, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, fmt.Errorf("opening log %s: %w", logPath, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	pid := cmd.Process.Pid
	// Reap it if it dies while we still run; after we exit, init does.
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return pid, exited, nil
}

// cmdline returns the arguments of process pid, or nil if it is gone.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ownsProcess reports whether pid is alive and is one of the lab's daemons:
// its command line names the lab's state dir (every lab daemon gets a path
// in it as an argument) and it is the lab's etcd ("weft lab etcd ...") or a
// weftd (possibly still "ip netns exec <ns> .../weftd ...").
func ownsProcess(pid int, stateDir string) bool {
	if pid <= 1 || !procstat.Alive(pid) {
		return false
	}
	args := cmdline(pid)
	names, daemon := false, false
	for i, a := range args {
		if a == stateDir || strings.HasPrefix(a, stateDir+"/") {
			names = true
		}
		base := filepath.Base(a)
		if base == "weftd" || (i == 0 && (base == "kube-apiserver" || base == "kube-controller-manager")) ||
			(a == "etcd" && i > 0 && args[i-1] == "lab") {
			daemon = true
		}
	}
	return names && daemon
}

// findProcesses lists the PIDs of live processes whose command line names
// stateDir as an argument or inside one: the lab's, including any whose PID
// the state file lost.
func findProcesses(stateDir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ownsProcess(pid, stateDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopProcess sends SIGTERM to pid if it is still the lab's, waits up to
// grace for it to exit, then sends SIGKILL.
func stopProcess(pid int, stateDir string, grace time.Duration) {
	if !ownsProcess(pid, stateDir) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !ownsProcess(pid, stateDir) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ownsProcess(pid, stateDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i := 0; i < 50 && ownsProcess(pid, stateDir); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// underlayBase is where lab underlays are chosen: the lower half of the
// benchmarking range 198.18.0.0/15 (RFC 2544), which is never routed on the
// Internet. The upper half, 198.19.0.0/16, belongs to the end-to-end tests'
// clusters (cmd/weftd), so that a lab and those tests running at the same
// time can never pick the same /24, even between one's check of the routes
// and its adding the bridge address.
var underlayBase = netip.MustParsePrefix("198.18.0.0/16")

// usedPrefixes lists the IPv4 prefixes of every route (all tables) and
// address in the root namespace, except default routes.
func usedPrefixes() ([]netip.Prefix, error) {
	h, err := netlinkx.Open()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	used, err := h.RouteDsts()
	if err != nil {
		return nil, err
	}
	addrs, err := h.AddrList(0)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		used = append(used, a.Prefix.Masked())
	}
	return used, nil
}

// pickUnderlay returns the first /24 of underlayBase, starting at the
// start-th one and wrapping around, that overlaps none of used.
func pickUnderlay(used []netip.Prefix, start int) (netip.Prefix, error) {
	n := 1 << (24 - underlayBase.Bits())
	base := underlayBase.Addr().As4()
	for k := 0; k < n; k++ {
		i := (start + k) % n
		b := base
		b[1] += byte(i >> 8)
		b[2] = byte(i)
		p := netip.PrefixFrom(netip.AddrFrom4(b), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %s for the lab's underlay", underlayBase)
}

// nthAddr returns the n-th address of p (p.Addr() + n).
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a
}
