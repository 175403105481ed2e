package etcd

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// requestLog records the store's etcd requests by operation name.
type requestLog struct {
	mu  sync.Mutex
	ops []string
}

func (r *requestLog) observe(op string, _ time.Duration) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// take returns the operations recorded since the last take, sorted.
func (r *requestLog) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops = nil
	slices.Sort(ops)
	return ops
}

// TestPrefetchLeases: with Options.PrefetchLeases a new node's start (the
// config, the look-up of its previous lease, the lease) makes one read
// transaction, one grant and one create transaction, and the key is bound to
// the etcd lease granted ahead; a restarted node keeps its own key and etcd
// lease and the one granted ahead is revoked; a listing gone stale between
// the config and the lease (another node took the hinted subnet) costs a
// lost race, not a shared subnet.
func TestPrefetchLeases(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	ctx := testCtx(t, 60*time.Second)
	put(t, cli, testPrefix+"/config", cfg50)
	newStore := func() (*Store, *requestLog) {
		reqs := &requestLog{}
		o := testOptions(&logBuffer{})
		o.PrefetchLeases, o.ObserveRequest, o.TTL = true, reqs.observe, time.Hour
		return NewWithClient(cli, o), reqs
	}
	start := func(s *Store, ip string, hint netip.Prefix) *subnet.Lease {
		t.Helper()
		cfg, err := s.GetNetworkConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.LookupLease(ctx, cfg, netip.MustParseAddr(ip)); err != nil {
			t.Fatal(err)
		}
		l, err := s.AcquireLease(ctx, cfg, attrsFor(ip), subnet.AcquireOptions{Hint: hint})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	leases := func() []clientv3.LeaseID {
		t.Helper()
		resp, err := cli.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []clientv3.LeaseID
		for _, l := range resp.Leases {
			ids = append(ids, l.ID)
		}
		return ids
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	// A new node.
	s, reqs := newStore()
	l := start(s, "192.168.2.1", netip.Prefix{})
	if got, want := reqs.take(), []string{"grant", "txn", "txn"}; !slices.Equal(got, want) {
		t.Errorf("a new node's start made the requests %v, want %v", got, want)
	}
	resp, err := cli.Get(ctx, subnetKey(l.Subnet.String()))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != l.EtcdLease || !slices.Contains(leases(), clientv3.LeaseID(l.EtcdLease)) {
		t.Fatalf("key of %s: %v (err %v); want it bound to etcd lease %x, which exists", l.Subnet, resp, err, l.EtcdLease)
	}
	if l.Expiration.Before(time.Now().Add(59*time.Minute)) || l.Expiration.After(time.Now().Add(time.Hour)) {
		t.Errorf("expiration %v, want an hour from the grant", l.Expiration)
	}

	// The same node restarted: its key and etcd lease stay, the one
	// granted ahead goes.
	before := leases()
	s2, reqs2 := newStore()
	l2 := start(s2, "192.168.2.1", netip.Prefix{})
	if l2.Subnet != l.Subnet || l2.EtcdLease != l.EtcdLease {
		t.Errorf("restarted node took %s on etcd lease %x, want %s on %x", l2.Subnet, l2.EtcdLease, l.Subnet, l.EtcdLease)
	}
	if got := reqs2.take(); slices.Contains(got, "get") {
		t.Errorf("a restarted node's start listed again: %v", got)
	}
	eventually("the etcd lease granted ahead to be revoked", func() bool { return slices.Equal(leases(), before) })

	// The listing goes stale between the config and the lease: another node
	// takes the subnet this one hints at.
	s3, _ := newStore()
	cfg, err := s3.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hint := netip.MustParsePrefix("10.5.7.0/24")
	other, err := NewWithClient(cli, testOptions(&logBuffer{})).AcquireLease(ctx, cfg, attrsFor("192.168.2.9"), subnet.AcquireOptions{Hint: hint})
	if err != nil || other.Subnet != hint {
		t.Fatalf("the other node took %v (err %v), want %s", other, err, hint)
	}
	l3, err := s3.AcquireLease(ctx, cfg, attrsFor("192.168.2.3"), subnet.AcquireOptions{Hint: hint})
	if err != nil {
		t.Fatal(err)
	}
	if l3.Subnet == hint || l3.Subnet == l.Subnet {
		t.Errorf("with a stale listing the node took %s, held by another node", l3.Subnet)
	}
}
