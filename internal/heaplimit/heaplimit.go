// Package heaplimit keeps the Go runtime's soft memory limit a little above
// what the process holds, so that the heap of a long-running agent does not
// grow to twice its live size between collections (GOGC=100) and stay there:
// with 20,000 peers that headroom is some 20 MB of resident memory.
//
// After every collection the limit is set to the live heap plus a headroom
// (a fraction of it, at least a floor) plus the runtime's other memory
// (stacks, metadata, fragmentation). A small heap keeps GOGC's own goal,
// which the floor leaves below the limit; a large one is collected when it
// has grown by the fraction. The cost is more frequent collections of a
// large heap while it allocates (a stream of lease changes); an idle agent
// allocates next to nothing and is not collected more often.
package heaplimit

import (
	"math"
	"math/bits"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Policy is the headroom above the live heap: the larger of Fraction of it
// and Floor bytes.
type Policy struct {
	Fraction float64
	Floor    uint64
}

// Limit returns the memory limit for a live heap of live bytes and other
// bytes of the runtime's memory beside the heap's objects.
func (p Policy) Limit(live, other uint64) int64 {
	head := max(uint64(float64(live)*p.Fraction), p.Floor)
	sum := live
	for _, v := range []uint64{head, other} {
		s, carry := bits.Add64(sum, v, 0)
		if carry != 0 || s > math.MaxInt64 {
			return math.MaxInt64
		}
		sum = s
	}
	return int64(sum)
}

// Follow keeps the soft memory limit at p.Limit after every collection,
// until stop is called (which restores the limit Follow found). It does
// nothing, and returns a no-op stop, when a limit is already set (the
// GOMEMLIMIT environment variable or debug.SetMemoryLimit): the operator's
// choice wins.
func Follow(p Policy) (stop func()) {
	prev := debug.SetMemoryLimit(-1)
	if prev != math.MaxInt64 {
		return func() {}
	}
	var stopped atomic.Bool
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	update := func() {
		metrics.Read(samples)
		live, total, objects, free, released := samples[0].Value.Uint64(), samples[1].Value.Uint64(),
			samples[2].Value.Uint64(), samples[3].Value.Uint64(), samples[4].Value.Uint64()
		var other uint64
		if used := objects + free + released; total > used {
			other = total - used
		}
		debug.SetMemoryLimit(p.Limit(live, other))
	}
	update()
	afterGC(func() bool {
		if stopped.Load() {
			return false
		}
		update()
		return true
	})
	return func() {
		stopped.Store(true)
		debug.SetMemoryLimit(prev)
	}
}

// sentinel is an object that dies at every collection: its cleanup runs
// after it. (Big enough not to be a tiny allocation, whose cleanups may
// never run.)
type sentinel struct{ _ [32]byte }

// afterGC calls f after each garbage collection (from the runtime's cleanup
// goroutine) for as long as f returns true.
func afterGC(f func() bool) {
	s := new(sentinel)
	runtime.AddCleanup(s, func(f func() bool) {
		if f() {
			afterGC(f)
		}
	}, f)
}
