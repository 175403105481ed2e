package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// benchConfig has 65,535 leasable /24s.
const benchConfig = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

// benchSubnet returns the i-th /24 of 10.0.0.0/8, skipping the first.
func benchSubnet(i int) netip.Prefix {
	return subnet.SubnetAt(netip.MustParsePrefix("10.0.0.0/8"), 24, uint64(i+1))
}

func benchIP(i int) string { return fmt.Sprintf("172.%d.%d.%d", 16+i>>16&0x0f, i>>8&0xff, i&0xff) }

// fillLeases writes n leases bound to one etcd lease, in transactions of 100.
func fillLeases(b *testing.B, cli *clientv3.Client, n int) {
	b.Helper()
	ctx := context.Background()
	g, err := cli.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	for start := 0; start < n; start += 100 {
		var ops []clientv3.Op
		for i := start; i < min(start+100, n); i++ {
			ops = append(ops, clientv3.OpPut(testPrefix+"/subnets/"+subnet.SubnetKey(benchSubnet(i), netip.Prefix{}), leaseValue(b, benchIP(i)), clientv3.WithLease(g.ID)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAcquire measures AcquireLease for a new node (no lease of its
// own, no hint) among n leases, beside its baseline made in the same
// iterations on the same etcd: the same RPCs in the same order, sent raw
// through clientv3 — the Get of the subnets prefix (n keys), the Grant of
// an etcd lease, and the create-if-absent Txn binding a free subnet's key
// to it — without what the store adds (decoding and classifying the keys,
// picking a free subnet, marshalling the value, metrics). The two take
// turns within every iteration, so a change in the machine's load hits
// both alike; each lease is released untimed before the next turn.
//
// It reports the mean of each, in ms: acquire-ms, raw-rpcs-ms (the three
// RPCs together), and raw-get-ms, raw-grant-ms, raw-txn-ms one by one.
//
//	go test -run '^$' -bench Acquire ./subnet/etcd/
func BenchmarkAcquire(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			srv := etcdtest.Start(b)
			cli := srv.Client()
			fillLeases(b, cli, n)
			cfg := mustConfig(b, benchConfig)
			ctx := context.Background()
			s, _ := newTestStore(b, cli)
			// The raw turn's key: a subnet no filled lease holds.
			rawKey := testPrefix + "/subnets/" + subnet.SubnetKey(benchSubnet(n), netip.Prefix{})
			var acq, get, grant, txn time.Duration
			iters := 0
			for i := 0; b.Loop(); i++ {
				attrs := attrsFor(benchIP(100000 + i))
				t0 := time.Now()
				l, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{TTL: time.Hour})
				acq += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.ReleaseLease(ctx, l); err != nil {
					b.Fatal(err)
				}
				val, err := attrs.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()

				t0 = time.Now()
				resp, err := cli.Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
				t1 := time.Now()
				if err != nil || len(resp.Kvs) < n {
					b.Fatalf("raw get: %v (%d keys, want %d)", err, len(resp.Kvs), n)
				}
				g, err := cli.Grant(ctx, 3600)
				t2 := time.Now()
				if err != nil {
					b.Fatalf("raw grant: %v", err)
				}
				tr, err := cli.Txn(ctx).
					If(clientv3.Compare(clientv3.CreateRevision(rawKey), "=", 0)).
					Then(clientv3.OpPut(rawKey, string(val), clientv3.WithLease(g.ID))).
					Commit()
				t3 := time.Now()
				if err != nil || !tr.Succeeded {
					b.Fatalf("raw txn on %s: %v (succeeded %v)", rawKey, err, err == nil && tr.Succeeded)
				}
				get, grant, txn = get+t1.Sub(t0), grant+t2.Sub(t1), txn+t3.Sub(t2)
				b.StopTimer()
				// Revoking the etcd lease deletes the key bound to it.
				if _, err := cli.Revoke(ctx, g.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				iters++
			}
			mean := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(iters) }
			b.ReportMetric(mean(acq), "acquire-ms")
			b.ReportMetric(mean(get+grant+txn), "raw-rpcs-ms")
			b.ReportMetric(mean(get), "raw-get-ms")
			b.ReportMetric(mean(grant), "raw-grant-ms")
			b.ReportMetric(mean(txn), "raw-txn-ms")
		})
	}
}

// writeBurst puts 1,000 leases from 16 writers (like 1,000 nodes starting)
// and returns when the last write was acknowledged.
func writeBurst(b *testing.B, cli *clientv3.Client, base int) time.Time {
	b.Helper()
	const writers = 16
	var wg sync.WaitGroup
	var next atomic.Int64
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= 1000 {
					return
				}
				key := testPrefix + "/subnets/" + subnet.SubnetKey(benchSubnet(base+i), netip.Prefix{})
				if _, err := cli.Put(context.Background(), key, leaseValue(b, benchIP(base+i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Now()
}

func clearBurst(b *testing.B, cli *clientv3.Client) {
	b.Helper()
	if _, err := cli.Delete(context.Background(), testPrefix+"/subnets/", clientv3.WithPrefix()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWatchDeliver1000 measures 1,000 lease puts until the store's
// watcher has delivered all 1,000 validated events; ms-after-last-write is
// how long delivery trailed the last acknowledged write.
func BenchmarkWatchDeliver1000(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client()
	cfg := mustConfig(b, benchConfig)
	s, _ := newTestStore(b, cli)
	var count atomic.Int64
	reached := make(chan time.Time, 1)
	var target atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.WatchLeases(ctx, cfg, func(evs []subnet.Event) {
			for _, ev := range evs {
				switch ev.Type {
				case subnet.EventAdded:
					count.Add(1)
				case subnet.EventRemoved:
					count.Add(-1)
				}
			}
			if t := target.Load(); t != 0 && count.Load() == t {
				select {
				case reached <- time.Now():
				default:
				}
			}
		})
	}()
	defer func() { cancel(); <-done }()
	benchDeliver(b, cli, &target, &count, reached)
}

// BenchmarkRawWatch1000 is the baseline: a raw clientv3 watch receiving the
// same 1,000 puts, with no parsing or validation.
func BenchmarkRawWatch1000(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client()
	var count atomic.Int64
	reached := make(chan time.Time, 1)
	var target atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := cli.Watch(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
	go func() {
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					count.Add(1)
				} else {
					count.Add(-1)
				}
			}
			if t := target.Load(); t != 0 && count.Load() == t {
				select {
				case reached <- time.Now():
				default:
				}
			}
		}
	}()
	benchDeliver(b, cli, &target, &count, reached)
}

func benchDeliver(b *testing.B, cli *clientv3.Client, target, count *atomic.Int64, reached chan time.Time) {
	var trail time.Duration
	iters := 0
	waitCount := func(want int64) {
		for deadline := time.Now().Add(30 * time.Second); count.Load() != want; {
			if time.Now().After(deadline) {
				b.Fatalf("watcher holds %d leases, want %d", count.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for b.Loop() {
		b.StopTimer()
		clearBurst(b, cli)
		waitCount(0)
		select {
		case <-reached:
		default:
		}
		target.Store(1000)
		b.StartTimer()
		last := writeBurst(b, cli, 0)
		var at time.Time
		select {
		case at = <-reached:
		case <-time.After(30 * time.Second):
			b.Fatalf("watcher delivered %d of 1000", count.Load())
		}
		b.StopTimer()
		target.Store(0)
		trail += max(at.Sub(last), 0)
		iters++
		b.StartTimer()
	}
	b.ReportMetric(float64(trail.Microseconds())/1000/float64(iters), "ms-after-last-write")
}
