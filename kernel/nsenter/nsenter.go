// Package nsenter runs code inside a network namespace: the one place where
// Weft switches an OS thread's namespace. Go schedules goroutines on many
// threads, so fn runs on a locked thread that is switched in and back out;
// processes fn starts inherit the namespace, goroutines fn starts do not.
package nsenter

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a locked OS thread switched into the namespace h (named
// name in errors), then switches back. If the thread cannot be switched
// back it stays locked, so the Go runtime retires it instead of reusing it
// in the wrong namespace.
func Do(h netns.NsHandle, name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("getting the current namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering namespace %s: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("returning from namespace %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// DoNamed is Do for a namespace named as in `ip netns` (/var/run/netns/<name>).
func DoNamed(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", name, err)
	}
	defer h.Close()
	return Do(h, name, fn)
}
