package kube

import (
	"context"
	"errors"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/subnet"
)

// WatchLeases calls fn, from this goroutine, with batches of validated
// lease events until ctx ends: first every peer Node that is a valid lease
// (delivered even when empty), then every change. The own node is not a
// peer. A Node whose annotations or podCIDR cannot be used is logged once
// per distinct problem, naming the node, and skipped; a peer that turns
// invalid, stops being a flannel node or changes backend type is removed.
// A podCIDR change is a removal and an addition. Changes to one node that
// arrive faster than fn takes them are folded into its latest state.
func (s *Store) WatchLeases(ctx context.Context, cfg *subnet.Config, fn func([]subnet.Event)) error {
	if err := s.waitSynced(ctx); err != nil {
		return err
	}
	var validate subnet.DataValidator
	if s.o.ValidatorFor != nil {
		validate = s.o.ValidatorFor(cfg)
	}
	w := &nodeWatcher{s: s, cfg: cfg, validate: validate, known: map[string]subnet.Lease{}, logged: map[string]string{}}

	// The snapshot: whatever is queued now is also in the store's view.
	s.takePending()
	fn(w.apply(s.snapshot()))

	probe := time.NewTicker(s.o.LivenessInterval)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.kick:
			if batch := w.apply(s.takePending()); len(batch) > 0 {
				fn(batch)
			}
		case <-probe.C:
			s.probe(ctx)
		}
	}
}

// probe asks the apiserver for the own node (from its watch cache) to
// notice an outage a silently broken watch connection would hide.
func (s *Store) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.o.LivenessInterval)
	defer cancel()
	_, err := s.cs.GetNode(pctx, s.name, metav1.GetOptions{ResourceVersion: "0"})
	if ctx.Err() != nil {
		return
	}
	s.setProbe(err == nil, err)
}

type nodeWatcher struct {
	s        *Store
	cfg      *subnet.Config
	validate subnet.DataValidator
	// known holds the lease delivered for each peer node, by node name.
	known map[string]subnet.Lease
	// logged holds the last problem logged for each node.
	logged map[string]string
}

// apply folds node states (nil: deleted) into known and returns the events,
// in node-name order.
func (w *nodeWatcher) apply(nodes map[string]*nodeInfo) []subnet.Event {
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	var batch []subnet.Event
	for _, name := range names {
		if name == w.s.name {
			continue
		}
		batch = w.applyOne(batch, name, nodes[name])
	}
	return batch
}

func (w *nodeWatcher) applyOne(batch []subnet.Event, name string, n *nodeInfo) []subnet.Event {
	old, had := w.known[name]
	remove := func() {
		if had {
			delete(w.known, name)
			batch = append(batch, subnet.Event{Type: subnet.EventRemoved, Lease: old})
		}
	}
	if n == nil {
		delete(w.logged, name)
		remove()
		return batch
	}
	l, err := w.s.ann.nodeLease(w.cfg, n, w.validate)
	if err != nil {
		w.logProblem(name, err, had)
		remove()
		return batch
	}
	if _, ok := w.logged[name]; ok {
		w.s.log.Info("node is a usable peer again", "node", name, "subnet", l.Subnet)
		delete(w.logged, name)
	}
	w.known[name] = l
	switch {
	case !had:
		batch = append(batch, subnet.Event{Type: subnet.EventAdded, Lease: l})
	case old.Subnet != l.Subnet || old.IPv6Subnet != l.IPv6Subnet:
		batch = append(batch, subnet.Event{Type: subnet.EventRemoved, Lease: old}, subnet.Event{Type: subnet.EventAdded, Lease: l})
	case !old.Attrs.Equal(l.Attrs):
		batch = append(batch, subnet.Event{Type: subnet.EventChanged, Lease: l})
	}
	return batch
}

func (w *nodeWatcher) logProblem(name string, err error, wasPeer bool) {
	msg := err.Error()
	if w.logged[name] == msg {
		return
	}
	w.logged[name] = msg
	switch {
	case errors.Is(err, errNotPeer) && wasPeer:
		w.s.log.Info("node is no longer a flannel node; removing it", "node", name)
	case errors.Is(err, errNotPeer):
		w.s.log.Debug("node is not a flannel node (yet)", "node", name)
	default:
		w.s.log.Warn("skipping node: its lease cannot be used", "node", name, "reason", err)
	}
}
