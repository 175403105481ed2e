package heaplimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	const mb = 1 << 20
	p := Policy{Fraction: 0.25, Floor: 8 * mb}
	for _, tc := range []struct {
		name        string
		live, other uint64
		want        int64
	}{
		{"a small heap gets the floor", 4 * mb, 6 * mb, 18 * mb},
		{"a large heap gets the fraction", 40 * mb, 6 * mb, 56 * mb},
		{"at the crossover both agree", 32 * mb, 0, 40 * mb},
		{"no overflow", math.MaxUint64 / 2, math.MaxUint64 / 2, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Limit(tc.live, tc.other); got != tc.want {
				t.Errorf("Limit(%d, %d) = %d, want %d", tc.live, tc.other, got, tc.want)
			}
		})
	}
}

// TestFollow checks that the limit follows the live heap from collection to
// collection, that stop restores the limit found, and that a limit already
// set is left alone.
func TestFollow(t *testing.T) {
	p := Policy{Fraction: 0.25, Floor: 1 << 20}
	stop := Follow(p)
	first := debug.SetMemoryLimit(-1)
	if first == math.MaxInt64 {
		stop()
		t.Fatal("Follow set no limit")
	}
	// Grow the live heap by 64 MB: after a collection the limit must
	// have followed it.
	keep := make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < first+64<<20 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the cleanup runs on its own goroutine
	}
	if got := debug.SetMemoryLimit(-1); got < first+64<<20 {
		t.Errorf("limit %d after 64 MB more live heap; it was %d", got, first)
	}
	runtime.KeepAlive(keep)
	stop()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("limit after stop = %d, want none (%d)", got, int64(math.MaxInt64))
	}

	debug.SetMemoryLimit(1 << 40)
	defer debug.SetMemoryLimit(math.MaxInt64)
	stop = Follow(p)
	runtime.GC()
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("Follow changed an operator's limit to %d", got)
	}
	stop()
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("stop changed an operator's limit to %d", got)
	}
}
