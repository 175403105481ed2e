package procstat

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// burn spins on n goroutines until each has used about d of CPU time by
// its own thread's clock.
func burn(n int, d time.Duration) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for t0 := threadCPU(); threadCPU()-t0 < d; {
			}
		})
	}
	wg.Wait()
}

func TestCPUCountsEveryThread(t *testing.T) {
	pid := os.Getpid()
	c0, err := CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Two threads other than the main one: /proc/PID/schedstat would see
	// none of this.
	burn(2, 100*time.Millisecond)
	c1, err := CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := c1 - c0; got < 200*time.Millisecond || got > 2*time.Second {
		t.Errorf("CPU advanced by %v while two threads burnt 100 ms each; want at least 200 ms", got)
	}
}

func TestCPUOfAnotherProcess(t *testing.T) {
	// A child that burns CPU, then exits: its clock is read after the
	// burning thread's work is done and before it is reaped.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBurn$")
	cmd.Env = append(os.Environ(), "PROCSTAT_BURN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 5)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "done\n" {
		t.Fatalf("helper: %q, %v", buf, err)
	}
	got, err := CPU(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got < 150*time.Millisecond {
		t.Errorf("the helper's CPU is %v; it burnt 150 ms on a thread of its own", got)
	}
	// /proc/PID/stat agrees to within its 10 ms ticks (plus what the
	// helper did between the two reads, which is nothing but waiting).
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	ticks := time.Duration(ut+st) * 10 * time.Millisecond
	if d := got - ticks; d < -30*time.Millisecond || d > 30*time.Millisecond {
		t.Errorf("CPU clock %v, /proc/PID/stat %v: more than 3 ticks apart", got, ticks)
	}
}

// TestHelperBurn is the child of TestCPUOfAnotherProcess.
func TestHelperBurn(t *testing.T) {
	if os.Getenv("PROCSTAT_BURN") != "1" {
		t.Skip("helper process only")
	}
	burn(1, 150*time.Millisecond)
	os.Stdout.WriteString("done\n")
	time.Sleep(time.Minute) // killed by the parent
}

func TestResolution(t *testing.T) {
	r, err := Resolution(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if r <= 0 || r > time.Microsecond {
		t.Errorf("resolution %v, want a positive value no coarser than 1 µs", r)
	}
}

func TestRSS(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 1<<34 {
		t.Errorf("RSS %d bytes: not a plausible size for this test binary", rss)
	}
}

func TestNoSuchProcess(t *testing.T) {
	// PIDs above pid_max (at most 2^22) never exist.
	const pid = 1 << 23
	if _, err := CPU(pid); err == nil || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("CPU(%d): error %v, want one naming the pid", pid, err)
	}
	if _, err := RSS(pid); err == nil || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("RSS(%d): error %v, want one naming the pid", pid, err)
	}
}

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
