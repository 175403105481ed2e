package etcd

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// WatchLeases calls fn, from this goroutine, with batches of validated lease
// events until ctx ends, and returns ctx's error. The first batch holds every
// valid lease of a consistent snapshot as EventAdded (it is delivered even
// when empty, so that the caller knows the initial set is complete); then
// each watch response becomes one batch. Invalid leases are logged once per
// key and revision and skipped; a lease that turns invalid is removed. After
// compaction, a broken watch or an etcd restart the store lists the prefix
// again and delivers only the difference from what it had delivered.
func (s *Store) WatchLeases(ctx context.Context, cfg *subnet.Config, fn func([]subnet.Event)) error {
	w := &leaseWatcher{
		s:      s,
		cfg:    cfg,
		fn:     fn,
		known:  make(map[string][2]uint64),
		seeds:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		logged: make(map[string]int64),
	}
	return w.run(ctx)
}

type leaseWatcher struct {
	s   *Store
	cfg *subnet.Config
	fn  func([]subnet.Event)
	// known holds the valid leases delivered to fn, by key below the
	// subnets prefix, as the digest of their attributes
	// (subnet.LeaseAttrs.Digest, under seeds): that tells a changed lease
	// from a rewritten one, and a removal needs only the subnets, which
	// are in the key. With thousands of peers a whole Lease and the full
	// key per peer took five times the memory.
	known map[string][2]uint64
	seeds [2]maphash.Seed
	// logged holds, by key, the revision of the last invalid value logged.
	logged map[string]int64
}

func (w *leaseWatcher) run(ctx context.Context) error {
	s := w.s
	b := s.newBackoff()
	failing := false
	// lost logs the first failure of an outage and reports not live.
	lost := func(msg string, err error) {
		if !failing {
			s.log.Warn(msg, "prefix", s.subnets, "err", err)
			failing = true
			s.watchLive(false)
		}
	}
	first := true
	for {
		start := time.Now()
		resp, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix())
		s.track("get", start)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lost("watching leases: cannot list them; retrying with backoff", err)
			if b.wait(ctx) != nil {
				return ctx.Err()
			}
			continue
		}
		if failing {
			s.log.Info("watching leases: etcd reachable again", "prefix", s.subnets)
			failing = false
		}
		if batch := w.resync(resp.Kvs); len(batch) > 0 || first {
			w.fn(batch)
			first = false
		}
		s.watchLive(true)
		rev := resp.Header.Revision
		reason, err := w.watch(ctx, rev+1)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.watchRestarted(reason)
		if reason == "compacted" {
			s.log.Info("watching leases: history compacted; listing again", "prefix", s.subnets)
			b.reset()
			continue
		}
		lost("watching leases: watch broken; reconnecting with backoff", err)
		if b.wait(ctx) != nil {
			return ctx.Err()
		}
	}
}

// watch follows the prefix from revision rev until the watch breaks, and
// says why ("compacted" or "error"). While it waits for events it asks etcd
// for a progress notification every LivenessInterval: the client resumes a
// watch silently after a lost connection, so this is how the store notices
// (and reports through OnWatchLive) that etcd is out of reach.
func (w *leaseWatcher) watch(ctx context.Context, rev int64) (string, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.s.cli.Watch(wctx, w.s.subnets, clientv3.WithPrefix(), clientv3.WithRev(rev))
	tick := time.NewTicker(w.s.liveIvl)
	defer tick.Stop()
	live := true
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-wch:
			if !ok {
				return "error", fmt.Errorf("watch of %s closed", w.s.subnets)
			}
		case <-tick.C:
			pctx, pcancel := context.WithTimeout(wctx, w.s.liveIvl)
			err := w.s.cli.RequestProgress(pctx)
			pcancel()
			switch {
			case err != nil && live && ctx.Err() == nil:
				w.s.log.Warn("watching leases: etcd is out of reach; the peer set may be stale until it is back", "err", err)
				live = false
				w.s.watchLive(false)
			case err == nil && !live:
				w.s.log.Info("watching leases: etcd reachable again")
				live = true
				w.s.watchLive(true)
			}
			continue
		}
		if wr.CompactRevision > 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			return "compacted", wr.Err()
		}
		if err := wr.Err(); err != nil {
			return "error", err
		}
		if !live {
			w.s.log.Info("watching leases: etcd reachable again")
			live = true
			w.s.watchLive(true)
		}
		var batch []subnet.Event
		for _, ev := range wr.Events {
			batch = w.apply(batch, ev)
		}
		if len(batch) > 0 {
			w.fn(batch)
		}
	}
}

// apply folds one watch event into known and appends what changed.
func (w *leaseWatcher) apply(batch []subnet.Event, ev *clientv3.Event) []subnet.Event {
	key := string(ev.Kv.Key)
	name := key[len(w.s.subnets):]
	if ev.Type == clientv3.EventTypeDelete {
		delete(w.logged, key)
		return w.forget(batch, name)
	}
	l, err := w.parse(ev.Kv)
	if err != nil {
		w.logInvalid(key, ev.Kv.ModRevision, err)
		return w.forget(batch, name)
	}
	return w.upsert(batch, name, l)
}

// forget drops the lease known under name (if any) and appends its
// removal.
func (w *leaseWatcher) forget(batch []subnet.Event, name string) []subnet.Event {
	if _, ok := w.known[name]; !ok {
		return batch
	}
	delete(w.known, name)
	// The name parsed when the lease was delivered.
	v4, v6, _ := subnet.ParseSubnetKey(name)
	return append(batch, subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: v4, IPv6Subnet: v6}})
}

func (w *leaseWatcher) upsert(batch []subnet.Event, name string, l subnet.Lease) []subnet.Event {
	old, ok := w.known[name]
	if !ok {
		// A copy of the name: it may be a slice of a longer key.
		name = strings.Clone(name)
	}
	d := l.Attrs.Digest(w.seeds)
	w.known[name] = d
	switch {
	case !ok:
		batch = append(batch, subnet.Event{Type: subnet.EventAdded, Lease: l})
	case old != d:
		batch = append(batch, subnet.Event{Type: subnet.EventChanged, Lease: l})
	}
	return batch
}

// resync diffs a fresh listing against known and returns the difference.
func (w *leaseWatcher) resync(kvs []*mvccpb.KeyValue) []subnet.Event {
	var batch []subnet.Event
	if len(w.known) == 0 {
		// The first listing: every valid lease is an event.
		batch = make([]subnet.Event, 0, len(kvs))
	}
	present := make(map[string]bool, len(kvs))
	valid := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		key := string(kv.Key)
		name := key[len(w.s.subnets):]
		present[key] = true
		l, err := w.parse(kv)
		if err != nil {
			w.logInvalid(key, kv.ModRevision, err)
			continue
		}
		valid[name] = true
		batch = w.upsert(batch, name, l)
	}
	var gone []string
	for name := range w.known {
		if !valid[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		batch = w.forget(batch, name)
	}
	for key := range w.logged {
		if !present[key] {
			delete(w.logged, key)
		}
	}
	return batch
}

// parse turns a key-value into a validated lease.
func (w *leaseWatcher) parse(kv *mvccpb.KeyValue) (subnet.Lease, error) {
	l, err := decodeLease(string(kv.Key[len(w.s.subnets):]), kv)
	if err != nil {
		return subnet.Lease{}, err
	}
	if err := w.cfg.ValidateLease(&l, w.s.validator(w.cfg)); err != nil {
		return subnet.Lease{}, err
	}
	return l, nil
}

func (w *leaseWatcher) logInvalid(key string, rev int64, err error) {
	if r, ok := w.logged[key]; ok && r == rev {
		return
	}
	w.logged[key] = rev
	w.s.log.Warn("skipping invalid lease", "key", key, "revision", rev, "reason", err)
}
