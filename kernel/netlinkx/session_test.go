package netlinkx

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

func TestSession(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	f := NewFake()
	l := f.AddLink("eth0", 1500)

	// Closed before Follow: the subscription is drained, nothing hangs.
	s, err := NewSession(context.Background(), f, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Followed: updates reach observe and the caller can Notify.
	ctx, cancel := context.WithCancel(context.Background())
	s, err = NewSession(ctx, f, log)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the session outlives the context it was made in
	seen := make(chan Update, 8)
	s.Follow(func(u Update) { seen <- u; s.Notify() }, func() {})
	if err := f.SetLinkMTU(l.Index, 1400); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-seen:
		if u.Kind != LinkUpdate || u.Link.MTU != 1400 {
			t.Errorf("update %+v", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no update reached observe")
	}
	select {
	case <-s.Changes():
	case <-time.After(time.Second):
		t.Fatal("Notify did not signal Changes")
	}
	s.Close()
}
