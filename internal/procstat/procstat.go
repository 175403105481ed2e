// Package procstat reads what Weft needs of a process from /proc: its state
// (to tell a live process from one that exited and was not reaped) and its
// CPU time and resident memory (for the benchmarks). /proc/PID/stat is
// parsed here and nowhere else.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the kernel's USER_HZ, the unit of the CPU times in
// /proc/PID/stat: 100 on every Linux architecture Go supports.
const userHZ = 100

// Stat is the part of /proc/PID/stat that Weft reads.
type Stat struct {
	// State is the one-letter state: R, S, D, Z (zombie), X (dead), ...
	State byte
	// UserTicks and SysTicks are utime and stime in clock ticks.
	UserTicks, SysTicks uint64
}

// ErrMalformed is wrapped by Parse's errors.
var ErrMalformed = errors.New("malformed /proc/PID/stat")

// Parse parses the contents of /proc/PID/stat. The command name (in
// parentheses) may hold spaces and parentheses itself, so the fields are
// counted from the last ')'.
func Parse(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("%w: no ')' after the command name in %q", ErrMalformed, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	if len(f) < 13 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%w: want a state and at least 12 more fields after the command name in %q", ErrMalformed, b)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Stat{}, fmt.Errorf("%w: utime %q, stime %q in %q", ErrMalformed, f[11], f[12], b)
	}
	return Stat{State: f[0][0], UserTicks: ut, SysTicks: st}, nil
}

// Read reads and parses /proc/<pid>/stat.
func Read(pid int) (Stat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	s, err := Parse(b)
	if err != nil {
		return Stat{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Exited reports whether the process has exited (a zombie waiting to be
// reaped, or dead).
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// CPU is the user and system CPU time the process has used.
func (s Stat) CPU() time.Duration {
	return time.Duration(s.UserTicks+s.SysTicks) * time.Second / userHZ
}

// Alive reports whether pid exists and has not exited.
func Alive(pid int) bool {
	s, err := Read(pid)
	return err == nil && !s.Exited()
}

// RSS returns the resident memory of pid in bytes (VmRSS in
// /proc/<pid>/status).
func RSS(pid int) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10, nil
				}
			}
			return 0, fmt.Errorf("%s: %w: VmRSS line %q", path, ErrMalformed, line)
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS line (a kernel thread or an exited process)", path)
}
