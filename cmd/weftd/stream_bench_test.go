package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// The streamed benchmarks: leases written one at a time by a separate
// process (this test binary re-executed as the writer, see TestMain), as when
// nodes register one by one (a cluster cold start, an etcd restore). The
// writer goes through subnet/etcd's Store (PutReservations with one lease
// per call: one etcd transaction per lease), never building lease keys
// itself.
//
//	BenchmarkStream4000            4,000 leases one by one onto an agent with
//	                               1,000: the streamed twin of BenchmarkBurst4000
//	BenchmarkStreamPerLease/peers=N 1,000 leases one by one onto an agent
//	                               with N: the agent's CPU per lease as the
//	                               peer set grows, beside the kernel's floor
//	                               for the same 1,000 onto N (batchFloor), and
//	                               its RSS

// streamWriterEnv, when set in the environment ("ENDPOINT FROM TO"), makes
// this test binary the writer process: it writes fakeLease(FROM) up to
// fakeLease(TO-1) one at a time through the store, then prints the wall
// clock of the last write's completion ("last-write-unix-ns N") and exits.
const streamWriterEnv = "WEFT_BENCH_STREAM_WRITER"

// runStreamWriter is the writer process's main; it returns the exit code.
func runStreamWriter() int {
	var ep string
	var from, to int
	if _, err := fmt.Sscan(os.Getenv(streamWriterEnv), &ep, &from, &to); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: want \"ENDPOINT FROM TO\": %v\n", streamWriterEnv, os.Getenv(streamWriterEnv), err)
		return 2
	}
	st, err := etcdstore.New(etcdstore.Options{Endpoints: []string{ep}, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintf(os.Stderr, "stream writer: %v\n", err)
		return 1
	}
	defer st.Close()
	ctx := context.Background()
	for i := from; i < to; i++ {
		if err := st.PutReservations(ctx, []subnet.Lease{fakeLease(i)}); err != nil {
			fmt.Fprintf(os.Stderr, "stream writer: lease %d: %v\n", i, err)
			return 1
		}
	}
	fmt.Printf("last-write-unix-ns %d\n", time.Now().UnixNano())
	return 0
}

// streamWriter is a running writer process.
type streamWriter struct {
	cmd   *exec.Cmd
	out   io.ReadCloser
	start time.Time
}

// startStream starts a writer process putting leases [from, to) one by one.
func (e *benchEnv) startStream(b *testing.B, from, to int) *streamWriter {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", streamWriterEnv, e.c.endpoint, from, to))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	w := &streamWriter{cmd: cmd, out: out, start: time.Now()}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the stream writer: %v", err)
	}
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return w
}

// wait waits for the writer to finish and returns when its last write
// completed.
func (w *streamWriter) wait(b *testing.B) time.Time {
	b.Helper()
	var last time.Time
	sc := bufio.NewScanner(w.out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "last-write-unix-ns "); ok {
			ns, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("stream writer: %q: %v", sc.Text(), err)
			}
			last = time.Unix(0, ns)
		}
	}
	if err := w.cmd.Wait(); err != nil {
		b.Fatalf("stream writer: %v", err)
	}
	if last.IsZero() {
		b.Fatal("stream writer: no last-write-unix-ns line")
	}
	return last
}

// perfWindowEnv, when set, makes the streamed benchmarks print to stderr
// the window each stream was measured in, as perf's timestamps give it
// (CLOCK_MONOTONIC seconds, perf record -k CLOCK_MONOTONIC), and the
// agent's PID: perf report --time START,END --pid PID then shows where the
// agent's CPU went during the stream alone, without its start.
const perfWindowEnv = "WEFT_BENCH_PERF_WINDOW"

// perfClock reads CLOCK_MONOTONIC, perf's clock with -k CLOCK_MONOTONIC.
func perfClock() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// logPerfWindow prints, with perfWindowEnv set, the window from start
// until 100 ms from now (the tail the benchmarks' CPU figures include).
func logPerfWindow(b *testing.B, h *host, start time.Duration) {
	if os.Getenv(perfWindowEnv) == "" {
		return
	}
	end := perfClock() + 100*time.Millisecond
	fmt.Fprintf(os.Stderr, "%s: pid %d stream window --time %.6f,%.6f\n", b.Name(), h.cmd.Process.Pid, start.Seconds(), end.Seconds())
}

// BenchmarkStream4000 writes 4,000 leases one at a time (a writer process,
// one transaction per lease) onto a ready agent holding 1,000, and reports
// the means over b.N of: the agent's CPU from the writer's start until 100
// ms after the last route is in the kernel (cpu-s; the baseline is
// BenchmarkBurst4000's cpu-s, the same leases at once), the backend Sets
// the agent ran for them (sets: how well it coalesced), the time from the
// writer's last write to the last route in the kernel
// (ms-after-last-write), the writer's run (writer-s), and the agent's RSS
// then (rss-MB). Every iteration starts a fresh agent on a host of its own.
func BenchmarkStream4000(b *testing.B) {
	e := newBenchEnv(b)
	var cpu, after, writer, rss, sets float64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		e.deletePeers(b)
		h := runningAgent(b, e, i, 1000)
		w := watchRoutes(b, h)
		sets0 := scrapeMetrics(b, h)["weft_reconcile_runs_total"]
		cpu0, _ := procStats(b, h.cmd.Process.Pid)
		b.StartTimer()
		t0 := perfClock()
		sw := e.startStream(b, 1000, 5000)
		last := w.waitFor(b, 24 /* RTM_NEWROUTE */, 4000, 120*time.Second)
		lastWrite := sw.wait(b)
		b.StopTimer()
		logPerfWindow(b, h, t0)
		after += float64(last.Sub(lastWrite).Microseconds()) / 1000
		writer += lastWrite.Sub(sw.start).Seconds()
		time.Sleep(100 * time.Millisecond)
		cpu1, r := procStats(b, h.cmd.Process.Pid)
		cpu += cpu1 - cpu0
		rss += r
		sets += scrapeMetrics(b, h)["weft_reconcile_runs_total"] - sets0
		h.kill()
		b.StartTimer()
	}
	b.ReportMetric(cpu/float64(b.N), "cpu-s")
	b.ReportMetric(sets/float64(b.N), "sets")
	b.ReportMetric(after/float64(b.N), "ms-after-last-write")
	b.ReportMetric(writer/float64(b.N), "writer-s")
	b.ReportMetric(rss/float64(b.N), "rss-MB")
}

// BenchmarkStreamPerLease writes 1,000 leases one at a time onto a ready
// agent holding N and reports the agent's CPU per lease streamed
// (cpu-ms-per-lease, from the writer's start until 100 ms after the last
// route) and its RSS afterwards (rss-MB, with N+1,000 peers, 100 ms after
// the last route; rss-settled-MB 1.5 s later, once the agent has returned
// what the stream left behind to the OS); beside it,
// measured in the same iteration before the agent starts, the kernel's
// floor for the same leases (floor-cpu-ms-per-lease: ip -batch and bridge
// -batch adding their 1,000 peers' entries to a namespace already holding
// the N others', see batchFloor), and the difference, the agent's own cost
// (own-cpu-ms-per-lease). An agent whose own cost does not depend on N
// keeps own-cpu-ms-per-lease flat from 1,000 to 20,000; the floor grows
// with N because the kernel's route insertion does.
func BenchmarkStreamPerLease(b *testing.B) {
	const more = 1000
	for _, n := range []int{1000, 5000, 20000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			e := newBenchEnv(b)
			var cpu, floor, after, rss, settled float64
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				floor += batchFloor(b, n, more)
				e.deletePeers(b)
				h := runningAgent(b, e, i, n)
				w := watchRoutes(b, h)
				cpu0, _ := procStats(b, h.cmd.Process.Pid)
				b.StartTimer()
				t0 := perfClock()
				sw := e.startStream(b, n, n+more)
				last := w.waitFor(b, 24 /* RTM_NEWROUTE */, more, 120*time.Second)
				lastWrite := sw.wait(b)
				b.StopTimer()
				logPerfWindow(b, h, t0)
				after += float64(last.Sub(lastWrite).Microseconds()) / 1000
				time.Sleep(100 * time.Millisecond)
				cpu1, r := procStats(b, h.cmd.Process.Pid)
				cpu += cpu1 - cpu0
				rss += r
				// Settled: past the agent's quiet time after a stream
				// (agent.settleAfter, 1 s), when it returns what the
				// stream left behind to the OS.
				time.Sleep(1500 * time.Millisecond)
				_, r = procStats(b, h.cmd.Process.Pid)
				settled += r
				h.kill()
				b.StartTimer()
			}
			perLease := func(s float64) float64 { return s / float64(b.N) / more * 1000 }
			b.ReportMetric(perLease(cpu), "cpu-ms-per-lease")
			b.ReportMetric(perLease(floor), "floor-cpu-ms-per-lease")
			b.ReportMetric(perLease(cpu-floor), "own-cpu-ms-per-lease")
			b.ReportMetric(after/float64(b.N), "ms-after-last-write")
			b.ReportMetric(rss/float64(b.N), "rss-MB")
			b.ReportMetric(settled/float64(b.N), "rss-settled-MB")
		})
	}
}
