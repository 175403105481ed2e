// Package procstat reads what the kernel accounts for a running process:
// its CPU time and its resident memory (the benchmarks use it to measure an
// agent from outside; the agent, to time its own first programming), and
// its state, which tells a live process from one that exited and was not
// reaped (the lab and its benchmarks stop only live processes).
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
	"errors"
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

// State is a process's one-letter state from /proc/PID/stat: R, S, D, Z
// (exited, not reaped), X (dead), ... /proc/PID/stat is parsed here and
// nowhere else.
type State byte

// Exited reports whether the process has exited (a zombie waiting to be
// reaped, or dead).
func (s State) Exited() bool { return s == 'Z' || s == 'X' }

// ErrMalformed is wrapped by ParseState's errors.
var ErrMalformed = errors.New("malformed /proc/PID/stat")

// ParseState returns the state field of the contents of /proc/PID/stat.
// The command name (in parentheses) may hold spaces and parentheses itself,
// so the state is the first field after the last ')'.
func ParseState(stat []byte) (State, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: no ')' after the command name in %q", ErrMalformed, stat)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, fmt.Errorf("%w: want a one-letter state and more fields after the command name in %q", ErrMalformed, stat)
	}
	return State(f[0][0]), nil
}

// ReadState reads the state of process pid.
func ReadState(pid int) (State, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s, err := ParseState(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Alive reports whether process pid exists and has not exited.
func Alive(pid int) bool {
	s, err := ReadState(pid)
	return err == nil && !s.Exited()
}
