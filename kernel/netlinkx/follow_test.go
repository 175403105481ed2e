package netlinkx

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// Follow hands updates to observe, and when a subscription ends early it
// calls lost and subscribes again, so later updates still arrive.
func TestFollowResubscribes(t *testing.T) {
	f := NewFake()
	l := f.AddLink("eth0", 1500)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The first subscription ends early, as when the kernel drops it.
	first := make(chan Update, 1)
	first <- Update{Kind: LostUpdates}
	close(first)

	var lost atomic.Int32
	got := make(chan Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, f, first, func(u Update) { got <- u }, func() { lost.Add(1) }, slog.New(slog.DiscardHandler))
	}()
	if u := <-got; u.Kind != LostUpdates {
		t.Fatalf("first update %+v", u)
	}
	// The re-subscription delivers a later change.
	deadline := time.After(5 * time.Second)
	for mtu := 1400; ; mtu++ {
		// Until Follow has subscribed again, the fake has no subscriber
		// and drops the update; so change the link until one arrives.
		if err := f.SetLinkMTU(l.Index, mtu); err != nil {
			t.Fatal(err)
		}
		select {
		case u := <-got:
			if u.Kind != LinkUpdate || u.Link.MTU < 1400 || u.Link.MTU > mtu {
				t.Fatalf("update %+v, want one of the MTU changes up to %d", u, mtu)
			}
			if lost.Load() != 1 {
				t.Fatalf("lost called %d times, want 1", lost.Load())
			}
			cancel()
			<-done
			return
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("no update after the subscription was renewed")
		}
	}
}
