// Command weftbench runs the lab measurements of the benchmark suite and
// writes each section's figures as JSON for benchreport. run.sh calls it;
// by hand, as root, after `make`:
//
//	weftbench [-bin bin] [-out bench/out] machine|labup|dataplane|convergence|cni|restart|idle
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/bench/labbench"
	"github.com/weftnet/weft/bench/report"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding weft, weftd, flannel and the CNI plugins")
	out := flag.String("out", "bench/out", "directory for the JSON results")
	stateDir := flag.String("state-dir", "/run/weft-bench", "state dir of the bench's labs")
	prefix := flag.String("prefix", "wbench", "name prefix of the bench's labs")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: weftbench [flags] machine|labup|dataplane|convergence|cni|restart|idle")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, flag.Arg(0), *bin, *out, *stateDir, *prefix)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weftbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, section, bin, out, stateDir, prefix string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if section == "machine" {
		return writeMachine(filepath.Join(out, "machine.json"))
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	b := &labbench.Bench{Bin: abs, StateDir: stateDir, Prefix: prefix, Log: os.Stderr}
	var (
		ms    []report.Measurement
		title string
	)
	switch section {
	case "labup":
		title = report.SecLabUp
		ms, err = b.LabUp(ctx, 3)
	case "dataplane":
		title = report.SecDataPlane
		ms, err = each([]string{"vxlan", "host-gw", "wireguard"}, func(backend string) ([]report.Measurement, error) {
			sixes := []bool{false, true}
			if backend == "wireguard" {
				sixes = sixes[:1] // IPv4 only: the backend has no IPv6 yet
			}
			return each(sixes, func(six bool) ([]report.Measurement, error) {
				return b.DataPlane(ctx, backend, 5, 3, six)
			})
		})
	case "convergence":
		title = report.SecConvergence
		ms, err = each([]int{3, 10, 30}, func(n int) ([]report.Measurement, error) {
			return b.Convergence(ctx, n, 3)
		})
	case "cni":
		title = report.SecCNI
		ms, err = b.CNI(ctx, 100, 10, 10)
	case "idle":
		title = report.SecScale
		// 20 s: several of the agent's periodic tasks fall in the window.
		ms, err = b.Idle(ctx, []int{1000, 5000}, 20*time.Second)
		if err == nil {
			var wg []report.Measurement
			wg, err = b.IdleWireGuard(ctx, 100, 10*time.Second)
			ms = append(ms, wg...)
		}
	case "restart":
		title = report.SecRestart
		ms, err = each([]string{"vxlan", "host-gw", "wireguard"}, func(backend string) ([]report.Measurement, error) {
			return b.Restart(ctx, backend)
		})
	default:
		return fmt.Errorf("unknown section %q", section)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", section, err)
	}
	return labbench.WriteLab(filepath.Join(out, "lab-"+section+".json"), title, ms)
}

// each runs fn for every value and concatenates the measurements.
func each[T any](values []T, fn func(T) ([]report.Measurement, error)) ([]report.Measurement, error) {
	var all []report.Measurement
	for _, v := range values {
		ms, err := fn(v)
		if err != nil {
			return nil, err
		}
		all = append(all, ms...)
	}
	return all, nil
}

// writeMachine records the CPU count, kernel, load average and date.
func writeMachine(path string) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	load, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err
	}
	m := report.Machine{
		Nproc:   runtime.NumCPU(),
		Kernel:  unix.ByteSliceToString(u.Release[:]),
		LoadAvg: strings.Join(strings.Fields(string(load))[:3], " "),
		Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
