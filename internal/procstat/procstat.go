// Package procstat reads what the kernel accounts for a running process:
// its CPU time and its resident memory. The benchmarks use it to measure
// an agent from outside; the agent, to time its own first programming.
//
// CPU time comes from the process's CPU clock (clock_gettime on the clock
// of another process, as clock_getcpuclockid(3) names it): the sum over all
// its threads, live and exited, in nanoseconds. /proc/PID/stat counts the
// same time only in clock ticks (10 ms), and /proc/PID/schedstat, although
// in nanoseconds, counts the main thread alone, which in a Go program does
// little of the work.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// cpuClock returns the clock id of pid's process CPU clock (the kernel's
// CPUCLOCK_SCHED of the whole thread group).
func cpuClock(pid int) int32 {
	const cpuClockSched = 2
	return int32(^pid)<<3 | cpuClockSched
}

// CPU returns the CPU time (user+system) process pid has used so far, all
// its threads together.
func CPU(pid int) (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(cpuClock(pid), &ts); err != nil {
		return 0, fmt.Errorf("reading the CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// Resolution returns the resolution of process pid's CPU clock, as the
// kernel states it (1 ns on Linux).
func Resolution(pid int) (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGetres(cpuClock(pid), &ts); err != nil {
		return 0, fmt.Errorf("reading the resolution of the CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// RSS returns the resident memory of process pid in bytes (VmRSS of
// /proc/PID/status).
func RSS(pid int) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	status, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the resident memory of process %d: %w", pid, err)
	}
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%s: unexpected VmRSS line %q", path, bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: VmRSS %q: %w", path, f[0], err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%s has no VmRSS line (a kernel thread, or a zombie)", path)
}
