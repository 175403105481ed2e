package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/logonce"
	"github.com/weftnet/weft/subnet"
)

// minCheck is the shortest pause between two lease checks.
const minCheck = 100 * time.Millisecond

// errLost wraps the reason a lease was lost.
var errLost = errors.New("lease lost")

// KeepLease keeps lease alive until ctx ends. It refreshes the lease's own
// etcd lease (never a new one) when less than renewMargin of its TTL is
// left, and watches the lease's key. When the lease is lost (etcd lease
// revoked or expired, key deleted or overwritten) it acquires again,
// preferring the same subnet, retrying with backoff until it succeeds, and
// calls onChange with the new lease. A reservation needs no renewal; it is
// only watched. KeepLease returns ctx's error.
func (s *Store) KeepLease(ctx context.Context, cfg *subnet.Config, lease *subnet.Lease, renewMargin time.Duration, onChange func(*subnet.Lease)) error {
	cur := *lease
	ttl := s.ttl
	for ctx.Err() == nil {
		reason := s.hold(ctx, &cur, renewMargin, &ttl)
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("lease lost; acquiring again", "subnet", cur.Subnet, "ipv6_subnet", cur.IPv6Subnet, "reason", reason)
		if !cur.Reserved() {
			s.revokeQuietly(cur.EtcdLease)
		}
		l, err := s.reacquire(ctx, cfg, &cur, ttl)
		if err != nil {
			break
		}
		cur = *l
		if onChange != nil {
			onChange(l)
		}
	}
	return ctx.Err()
}

// reacquire calls AcquireLease until it succeeds or ctx ends, logging the
// first failure and each change of error.
func (s *Store) reacquire(ctx context.Context, cfg *subnet.Config, cur *subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	b := s.newBackoff()
	var failed logonce.Errors
	for {
		l, err := s.AcquireLease(ctx, cfg, cur.Attrs, subnet.AcquireOptions{Hint: cur.Subnet, HintIPv6: cur.IPv6Subnet, TTL: ttl})
		if err == nil {
			s.log.Info("lease acquired again", "subnet", l.Subnet, "previous", cur.Subnet)
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if failed.Changed(err) {
			s.log.Error("acquiring the lease again failed; retrying", "previous", cur.Subnet, "err", err)
		}
		if werr := b.wait(ctx); werr != nil {
			return nil, werr
		}
	}
}

func (s *Store) revokeQuietly(id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
	s.track("revoke", start)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.log.Debug("revoking a lost etcd lease", "lease", id, "err", err)
	}
}

// hold keeps l alive until it is lost (returning the reason) or ctx ends.
// It updates l.ModRevision and l.Expiration as it goes, and *ttl with the
// etcd lease's granted TTL.
func (s *Store) hold(ctx context.Context, l *subnet.Lease, margin time.Duration, ttl *time.Duration) error {
	key := s.subnets + l.Key()
	b := s.newBackoff()
	failing := false
	fail := func(what string, err error) {
		if !failing {
			s.log.Warn("keeping the lease: etcd request failed; retrying", "subnet", l.Subnet, "op", what, "err", err)
			failing = true
		}
	}
	recovered := func() {
		if failing {
			s.log.Info("keeping the lease: etcd reachable again", "subnet", l.Subnet)
			failing = false
		}
		b.reset()
	}

	var wch clientv3.WatchChan
	cancelWatch := func() {}
	defer func() { cancelWatch() }()
	startWatch := func(rev int64) {
		cancelWatch()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		cancelWatch = cancel
		wch = s.cli.Watch(wctx, key, clientv3.WithRev(rev))
	}
	startWatch(l.ModRevision + 1)

	timer := time.NewTimer(s.firstCheck(*ttl))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if ok && wr.Err() == nil {
				if err := s.ownKeyEvents(l, wr.Events); err != nil {
					return err
				}
				continue
			}
			// The watch broke (compaction, no leader, closed): look at
			// the key directly and watch again from there.
			s.watchRestarted("error")
			rev, err := s.checkOwnKey(ctx, key, l)
			if errors.Is(err, errLost) {
				return err
			}
			if err != nil {
				fail("get", err)
				wch = nil
				if b.wait(ctx) != nil {
					return ctx.Err()
				}
				startWatch(l.ModRevision + 1)
				continue
			}
			recovered()
			startWatch(rev + 1)
		case <-timer.C:
			next, err := s.renew(ctx, l, margin, ttl)
			if errors.Is(err, errLost) {
				return err
			}
			if err != nil {
				fail("renew", err)
				next = min(max(b.cur*2, s.backMin), s.backMax)
				b.cur = next
			} else {
				recovered()
			}
			timer.Reset(next)
		}
	}
}

func (s *Store) firstCheck(ttl time.Duration) time.Duration {
	if s.checkIvl > 0 {
		return s.checkIvl
	}
	return max(min(time.Minute, ttl/3), minCheck)
}

// ownKeyEvents checks watch events on the lease's own key.
func (s *Store) ownKeyEvents(l *subnet.Lease, evs []*clientv3.Event) error {
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypeDelete {
			return fmt.Errorf("%w: key %s deleted at revision %d", errLost, ev.Kv.Key, ev.Kv.ModRevision)
		}
		if err := s.stillOurs(l, ev.Kv.Key, ev.Kv.Lease, ev.Kv.Value); err != nil {
			return err
		}
		l.ModRevision = ev.Kv.ModRevision
	}
	return nil
}

// stillOurs reports (as an errLost error) whether a key's current lease ID
// and value no longer belong to l.
func (s *Store) stillOurs(l *subnet.Lease, key []byte, leaseID int64, value []byte) error {
	if leaseID != l.EtcdLease {
		return fmt.Errorf("%w: key %s is now bound to etcd lease %x, not %x", errLost, key, leaseID, l.EtcdLease)
	}
	a, err := subnet.ParseLeaseAttrs(value)
	if err != nil {
		return fmt.Errorf("%w: key %s overwritten: %w", errLost, key, err)
	}
	if a.NodeIP() != l.Attrs.NodeIP() {
		return fmt.Errorf("%w: key %s overwritten with PublicIP %s (PublicIPv6 %v)", errLost, key, a.PublicIP, a.IPv6())
	}
	return nil
}

// checkOwnKey reads the lease's key and returns the revision read at.
func (s *Store) checkOwnKey(ctx context.Context, key string, l *subnet.Lease) (int64, error) {
	start := time.Now()
	resp, err := s.cli.Get(ctx, key)
	s.track("get", start)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%w: key %s no longer exists", errLost, key)
	}
	kv := resp.Kvs[0]
	if err := s.stillOurs(l, kv.Key, kv.Lease, kv.Value); err != nil {
		return 0, err
	}
	l.ModRevision = kv.ModRevision
	return resp.Header.Revision, nil
}

// renew checks the etcd lease's remaining TTL and refreshes it when less
// than margin is left. It returns when to check next.
func (s *Store) renew(ctx context.Context, l *subnet.Lease, margin time.Duration, ttl *time.Duration) (time.Duration, error) {
	ivl := s.firstCheck(*ttl)
	if l.Reserved() {
		return ivl, nil
	}
	id := clientv3.LeaseID(l.EtcdLease)
	start := time.Now()
	resp, err := s.cli.TimeToLive(ctx, id)
	s.track("ttl", start)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL < 0) {
		return 0, fmt.Errorf("%w: etcd lease %x expired or was revoked", errLost, l.EtcdLease)
	}
	if err != nil {
		return 0, fmt.Errorf("reading the TTL of etcd lease %x: %w", l.EtcdLease, err)
	}
	if resp.GrantedTTL > 0 {
		*ttl = time.Duration(resp.GrantedTTL) * time.Second
	}
	// A margin as long as the TTL would renew on every check.
	margin = min(margin, *ttl/2)
	// etcd reports whole seconds (0 while under a second remains).
	remaining := time.Duration(resp.TTL) * time.Second
	if remaining <= margin {
		start = time.Now()
		ka, err := s.cli.KeepAliveOnce(ctx, id)
		s.track("keepalive", start)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, fmt.Errorf("%w: etcd lease %x not found on renewal", errLost, l.EtcdLease)
		}
		if err != nil {
			return 0, fmt.Errorf("renewing etcd lease %x: %w", l.EtcdLease, err)
		}
		remaining = time.Duration(ka.TTL) * time.Second
		l.Expiration = start.Add(remaining)
		s.log.Debug("renewed the lease", "subnet", l.Subnet, "ttl", remaining)
	}
	return max(min(ivl, remaining-margin), minCheck), nil
}

// ReleaseLease deletes the lease's key if it is still bound to the lease's
// etcd lease, then revokes that etcd lease. A reservation is left alone: it
// belongs to the operator. A key already gone is not an error; a key bound
// to another etcd lease (another node took the subnet) is kept, and the
// error wraps ErrLeaseTaken.
func (s *Store) ReleaseLease(ctx context.Context, lease *subnet.Lease) error {
	if lease.Reserved() {
		return nil
	}
	key := s.subnets + lease.Key()
	start := time.Now()
	txn, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.LeaseID(lease.EtcdLease))).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	s.track("txn", start)
	if err != nil {
		return fmt.Errorf("releasing lease %s: %w", key, err)
	}
	var taken error
	if !txn.Succeeded {
		if r := txn.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			holder := fmt.Sprintf("bound to etcd lease %x", r.Kvs[0].Lease)
			if r.Kvs[0].Lease == 0 {
				holder = "a reservation"
			}
			taken = fmt.Errorf("%w: %s is %s now, not bound to %x: kept", ErrLeaseTaken, key, holder, lease.EtcdLease)
		}
	}
	start = time.Now()
	_, err = s.cli.Revoke(ctx, clientv3.LeaseID(lease.EtcdLease))
	s.track("revoke", start)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return errors.Join(taken, fmt.Errorf("revoking etcd lease %x of %s: %w", lease.EtcdLease, key, err))
	}
	return taken
}
