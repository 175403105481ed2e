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

func BenchmarkAcquire(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		srv := etcdtest.Start(b)
		cli := srv.Client()
		fillLeases(b, cli, n)
		cfg := mustConfig(b, benchConfig)
		ctx := context.Background()

		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			s, _ := newTestStore(b, cli)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				l, err := s.AcquireLease(ctx, cfg, attrsFor(benchIP(100000+i)), subnet.AcquireOptions{TTL: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.ReleaseLease(ctx, l); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("RawGetPrefix/leases=%d", n), func(b *testing.B) {
			for b.Loop() {
				resp, err := cli.Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
				if err != nil || len(resp.Kvs) < n {
					b.Fatalf("get: %v (%d keys)", err, len(resp.Kvs))
				}
			}
		})
	}
}

func BenchmarkRawTxn(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client()
	ctx := context.Background()
	g, err := cli.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		key := testPrefix + "/subnets/" + subnet.SubnetKey(benchSubnet(i), netip.Prefix{})
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, leaseValue(b, benchIP(i)), clientv3.WithLease(g.ID))).
			Commit()
		if err != nil || !resp.Succeeded {
			b.Fatalf("txn: %v", err)
		}
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
