package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// InvalidLease is a key under the subnets prefix whose value fails the
// validation WatchLeases applies (agents skip it).
type InvalidLease struct {
	// Key is the key below <prefix>/subnets/, e.g. "10.244.3.0-24".
	Key string
	Err error
}

// ListLeases reads every lease once (one Get) and returns, in key order,
// the leases WatchLeases would deliver and, with the reason, those it
// would skip: the view `weft doctor` checks the peers against.
func (s *Store) ListLeases(ctx context.Context, cfg *subnet.Config) ([]subnet.Lease, []InvalidLease, error) {
	start := time.Now()
	resp, err := s.cli.Get(ctx, s.subnets, clientv3.WithPrefix())
	s.track("get", start)
	if err != nil {
		return nil, nil, fmt.Errorf("listing leases under %s: %w", s.subnets, err)
	}
	w := &leaseWatcher{s: s, cfg: cfg}
	var valid []subnet.Lease
	var invalid []InvalidLease
	for _, kv := range resp.Kvs {
		l, err := w.parse(kv)
		if err != nil {
			invalid = append(invalid, InvalidLease{Key: string(kv.Key[len(s.subnets):]), Err: err})
			continue
		}
		valid = append(valid, l)
	}
	return valid, invalid, nil
}
