//go:build race

package bintest

// Race reports whether the test binary runs with the race detector.
const Race = true
