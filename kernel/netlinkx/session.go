package netlinkx

import (
	"context"
	"fmt"
	"log/slog"
)

// Session is what a backend needs around its netlink handle: the handle
// (opened here when the caller gives none, and then closed by Close), one
// subscription followed by a goroutine (see Follow), and a coalesced
// "something changed" signal for the agent. Both backends embed one.
type Session struct {
	NL      Interface
	log     *slog.Logger
	closeNL func() error
	changes chan struct{}
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	updates <-chan Update
	started bool
	done    chan struct{}
}

// NewSession uses nl, or opens a handle on the current namespace when nl is
// nil, and subscribes to its updates. The subscription lives until Close,
// not until ctx ends (a backend outlives the context it was created in).
// Call Follow to start delivering the updates.
func NewSession(ctx context.Context, nl Interface, log *slog.Logger) (*Session, error) {
	s := &Session{NL: nl, log: log, changes: make(chan struct{}, 1), done: make(chan struct{})}
	if s.NL == nil {
		h, err := Open()
		if err != nil {
			return nil, err
		}
		s.NL, s.closeNL = h, h.Close
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	updates, err := s.NL.Subscribe(wctx)
	if err != nil {
		cancel()
		s.closeHandle()
		return nil, fmt.Errorf("watching netlink: %w", err)
	}
	s.ctx, s.cancel, s.updates = wctx, cancel, updates
	return s, nil
}

// Follow starts the goroutine that hands every update to observe and calls
// lost (after which it notifies) when updates were lost; see the function
// Follow. Call it once.
func (s *Session) Follow(observe func(Update), lost func()) {
	s.started = true
	go func() {
		defer close(s.done)
		Follow(s.ctx, s.NL, s.updates, observe, func() { lost(); s.Notify() }, s.log)
	}()
}

// Changes returns the channel that Notify signals (backend.Backend.Changes).
func (s *Session) Changes() <-chan struct{} { return s.changes }

// Notify signals Changes without blocking; signals coalesce.
func (s *Session) Notify() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// Close ends the subscription, waits for the Follow goroutine (or drains
// the subscription when Follow never ran), and closes a handle that
// NewSession opened.
func (s *Session) Close() {
	s.cancel()
	if s.started {
		<-s.done
	} else {
		for range s.updates {
		}
	}
	s.closeHandle()
}

func (s *Session) closeHandle() {
	if s.closeNL != nil {
		if err := s.closeNL(); err != nil {
			s.log.Warn("closing netlink handle", "err", err)
		}
	}
}
