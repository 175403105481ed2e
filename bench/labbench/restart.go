package labbench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/ops/lab"
)

// Restart pings from host 1's pod to host 2's pod every 10 ms while first
// host 2's agent, then host 1's, is killed with SIGKILL and started again
// with its own command line; it reports the packets lost and the time from
// each restart until the agent is ready.
func (b *Bench) Restart(ctx context.Context, backend string) ([]report.Measurement, error) {
	st, upCmd, _, err := b.Up(ctx, 2, 1, backend)
	if err != nil {
		return nil, err
	}
	defer b.Down()
	from, to := st.Hosts[0].Pods[0], st.Hosts[1].Pods[0]
	pingArgv := nsArgv(from.NS, "ping", "-n", "-q", "-i", "0.01", to.Addr.Addr().String())
	var out bytes.Buffer
	ping, err := start(pingArgv, &out)
	if err != nil {
		return nil, err
	}
	defer stop(ping)
	time.Sleep(time.Second)
	var ready []float64
	for _, h := range []lab.Host{st.Hosts[1], st.Hosts[0]} {
		d, agent, err := b.killAndRestart(ctx, st, h)
		defer stop(agent)
		if err != nil {
			return nil, err
		}
		b.say("%s: %s's agent SIGKILLed and restarted, ready in %s", backend, h.Name, d.Round(time.Millisecond))
		ready = append(ready, ms(d))
		time.Sleep(time.Second)
	}
	_ = ping.Process.Signal(syscall.SIGINT)
	_ = ping.Wait()
	sent, recv, err := parsePingSummary(out.String())
	if err != nil {
		return nil, err
	}
	b.say("%s: %d pings sent, %d answered", backend, sent, recv)
	cmd := fmt.Sprintf("%s; %s while kill -9 of host2's then host1's weftd and a restart with the same command line", upCmd, b.show(pingArgv...))
	return []report.Measurement{
		{What: backend + ": pings lost (every 10 ms, pod to pod across two hosts) while each agent is SIGKILLed and restarted " + lossGoal(backend),
			Unit: "packets", Stat: "sum", Samples: []float64{float64(sent - recv)}, Command: cmd,
			Note: fmt.Sprintf("%d sent", sent)},
		{What: backend + ": agent restart until ready", Unit: "ms", Stat: "median", Samples: ready, Command: cmd},
	}, nil
}

// killAndRestart kills host h's weftd (the PID the lab recorded, checked to
// be a weftd) with SIGKILL and starts it again with the same command line
// and log, as this process's child; it returns the time until /readyz
// answers and the new agent, which the caller stops.
func (b *Bench) killAndRestart(ctx context.Context, st *lab.State, h lab.Host) (time.Duration, *exec.Cmd, error) {
	var p lab.Proc
	for _, q := range st.Procs {
		if q.Name == h.Name {
			p = q
		}
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
	argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	if err != nil || p.PID <= 1 || !strings.HasSuffix(argv[0], "weftd") {
		return 0, nil, fmt.Errorf("%s's agent (pid %d) is not a running weftd: %q %v", h.Name, p.PID, argv, err)
	}
	// Its environment too: the lab gives each host its own WireGuard key
	// file and socket directory there.
	rawEnv, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/environ")
	if err != nil {
		return 0, nil, fmt.Errorf("%s's agent (pid %d): %w", h.Name, p.PID, err)
	}
	env := strings.Split(strings.TrimSuffix(string(rawEnv), "\x00"), "\x00")
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		return 0, nil, fmt.Errorf("killing %s's agent: %w", h.Name, err)
	}
	for i := 0; i < 200 && procstat.Alive(p.PID); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	logf, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close()
	t0 := time.Now()
	// The agent was started in its host's namespace by `ip netns exec`;
	// its own command line runs in ours, so enter it again.
	agent, err := startEnv(nsArgv(h.NS, argv...), env, logf)
	if err != nil {
		return 0, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitReady(wctx, h.Addr, st.HealthzPort); err != nil {
		return 0, agent, err
	}
	return time.Since(t0), agent, nil
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// parsePingSummary returns the packets sent and received from ping's
// closing statistics.
func parsePingSummary(out string) (sent, recv int, err error) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no summary in ping's output: %q", out)
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ = strconv.Atoi(m[2])
	return sent, recv, nil
}

// lossGoal says what a restart may lose: nothing where the kernel keeps the
// data plane; with the wireguard backend on the userspace engine (this
// kernel has no WireGuard), what the peers re-configured and a handshake
// cost, stated as at most 1 s per restart (100 pings).
func lossGoal(backend string) string {
	if backend == "wireguard" {
		return "(userspace engine: at most 100 per restart, the stated 1 s window)"
	}
	return "(must be 0)"
}
