// Package labbench measures Weft on `weft lab` clusters: the time `weft lab
// up` takes, TCP throughput over the overlay against the underlay, how fast
// a joining host converges, CNI ADD/DEL latency, and packets lost while an
// agent is SIGKILLed and restarted. Each measurement brings up its own lab
// through the real `weft` CLI (with a prefix and state dir of its own, so it
// never meets another lab), takes it down again, and returns its figures
// with their raw samples as report.Measurement values.
//
// Every process it starts is its child, started with a parent-death signal
// and killed by PID; everything it adds to a lab carries the lab's names,
// so `weft lab down` removes it even after a crash.
package labbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/kernel/nsenter"
	"github.com/weftnet/weft/ops/lab"
)

// Bench runs the measurements.
type Bench struct {
	// Bin is the absolute path of the directory holding weft, weftd,
	// flannel and the delegate plugins (the repository's bin/).
	Bin string
	// StateDir and Prefix select the bench's own lab.
	StateDir string
	Prefix   string
	// Log receives progress lines.
	Log io.Writer
}

func (b *Bench) say(format string, args ...any) {
	fmt.Fprintf(b.Log, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// labFlags select the bench's lab on weft's command line.
func (b *Bench) labFlags() []string {
	return []string{"--state-dir", b.StateDir, "--prefix", b.Prefix}
}

// show renders argv as a person would type it from the repository's root.
func (b *Bench) show(argv ...string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if rest, ok := strings.CutPrefix(a, b.Bin+"/"); ok {
			a = "bin/" + rest
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// Up runs `weft lab up` and returns the lab's state, the command line as
// shown in the results, and how long the command took. On failure it takes
// the half-made lab down. extra are more flags of `weft lab up`.
func (b *Bench) Up(ctx context.Context, hosts, pods int, backend string, extra ...string) (*lab.State, string, time.Duration, error) {
	argv := append([]string{filepath.Join(b.Bin, "weft"), "lab", "up",
		"--hosts", strconv.Itoa(hosts), "--pods", strconv.Itoa(pods), "--backend", backend}, extra...)
	argv = append(argv, b.labFlags()...)
	b.say("%s", b.show(argv...))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	if err != nil {
		b.Down()
		return nil, "", 0, fmt.Errorf("%s: %w\n%s", b.show(argv...), err, out.String())
	}
	st, err := lab.LoadState(b.StateDir)
	if err != nil {
		b.Down()
		return nil, "", 0, err
	}
	return st, b.show(argv...), took, nil
}

// Down runs `weft lab down` for the bench's lab. It uses a context of its
// own so that it also runs after the bench was interrupted.
func (b *Bench) Down() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{filepath.Join(b.Bin, "weft"), "lab", "down"}, b.labFlags()...)
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		b.say("warning: %s: %v\n%s", b.show(argv...), err, out)
	}
}

// start starts argv as a child that the kernel kills if this process dies.
func start(argv []string, stdout io.Writer) (*exec.Cmd, error) {
	return startEnv(argv, nil, stdout)
}

// startEnv is start with the environment env (nil: this process's).
func startEnv(argv, env []string, stdout io.Writer) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	return cmd, nil
}

// stop kills cmd by its PID and reaps it.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// nsArgv prefixes argv with `ip netns exec ns`, which execs argv in place
// (so the PID is argv's).
func nsArgv(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// run runs argv and returns its combined output; the error quotes both.
func run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// inNS runs fn on a locked OS thread switched into the named namespace (see
// nsenter.DoNamed).
func inNS(name string, fn func() error) error { return nsenter.DoNamed(name, fn) }

// waitReady polls a host's /readyz every 5 ms until it answers 200.
func waitReady(ctx context.Context, addr netip.Addr, port int) error {
	url := "http://" + netip.AddrPortFrom(addr, uint16(port)).String() + "/readyz"
	cl := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := cl.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WriteLab writes a section's measurements as JSON to path.
func WriteLab(path, section string, ms []report.Measurement) error {
	b, err := json.MarshalIndent(report.LabFile{Section: section, Measurements: ms}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", section, err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
