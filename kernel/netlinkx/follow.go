package netlinkx

import (
	"context"
	"log/slog"
	"time"
)

// Follow hands every update of a subscription to observe until ctx ends.
// When the subscription ends early (the kernel dropped it, so updates were
// lost) it calls lost, so that the caller re-reads the kernel, and
// subscribes again, retrying every second while that fails. It returns when
// ctx ends; backends run it in the goroutine that Close waits for.
func Follow(ctx context.Context, nl Interface, updates <-chan Update, observe func(Update), lost func(), log *slog.Logger) {
	for {
		for u := range updates {
			observe(u)
		}
		if ctx.Err() != nil {
			return
		}
		lost()
		var err error
		for {
			if updates, err = nl.Subscribe(ctx); err == nil {
				break
			}
			log.Warn("netlink subscription failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}
