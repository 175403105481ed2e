package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// cfg50 has exactly 50 leasable subnets: 10.5.1.0/24 .. 10.5.50.0/24.
const cfg50 = `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.50.0","Backend":{"Type":"vxlan"}}`

func TestConcurrentAcquire(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	s, _ := newTestStore(t, srv.Client())
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 60*time.Second)

	const n = 64
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  = map[netip.Prefix]string{}
		dups     []string
		exhaust  int
		otherErr []error
		lastErr  error
	)
	start := make(chan struct{})
	for i := range n {
		ip := fmt.Sprintf("192.168.%d.%d", i/200, i%200+1)
		wg.Go(func() {
			<-start
			l, err := s.AcquireLease(ctx, cfg, attrsFor(ip), subnet.AcquireOptions{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNoFreeSubnet):
				exhaust++
				lastErr = err
			case err != nil:
				otherErr = append(otherErr, err)
			default:
				if prev, ok := winners[l.Subnet]; ok {
					dups = append(dups, fmt.Sprintf("%s to %s and %s", l.Subnet, prev, ip))
				}
				winners[l.Subnet] = ip
			}
		})
	}
	close(start)
	wg.Wait()
	if len(otherErr) > 0 {
		t.Fatalf("unexpected errors: %v", otherErr)
	}
	if len(dups) > 0 {
		t.Fatalf("subnets handed out twice: %v", dups)
	}
	if len(winners) != 50 || exhaust != 14 {
		t.Fatalf("got %d winners and %d exhaustion errors, want 50 and 14", len(winners), exhaust)
	}
	want := "no free subnet: network 10.5.0.0/16 with SubnetLen 24 has 50 subnets in [10.5.1.0, 10.5.50.0], held by 50 leases and 0 reservations"
	if lastErr.Error() != want {
		t.Errorf("exhaustion error:\n got %q\nwant %q", lastErr, want)
	}
	resp, err := srv.Client().Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]bool{}
	for _, kv := range resp.Kvs {
		a, err := subnet.ParseLeaseAttrs(kv.Value)
		if err != nil {
			t.Fatalf("key %s: %v", kv.Key, err)
		}
		if ips[a.PublicIP.String()] {
			t.Errorf("PublicIP %s holds two keys", a.PublicIP)
		}
		ips[a.PublicIP.String()] = true
		if kv.Lease == 0 {
			t.Errorf("key %s has no etcd lease", kv.Key)
		}
	}
	if len(resp.Kvs) != 50 {
		t.Errorf("etcd holds %d lease keys, want 50", len(resp.Kvs))
	}
}

func TestAcquireReuseAndHint(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 30*time.Second)

	first, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("same PublicIP gets the same subnet and etcd lease", func(t *testing.T) {
		// A restarted node: a fresh store, same attributes.
		s2, _ := newTestStore(t, cli)
		again, err := s2.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if again.Subnet != first.Subnet || again.EtcdLease != first.EtcdLease {
			t.Errorf("reacquired %s (etcd lease %x), want %s (etcd lease %x)", again.Subnet, again.EtcdLease, first.Subnet, first.EtcdLease)
		}
	})
	t.Run("changed VtepMAC is rewritten in place", func(t *testing.T) {
		a := attrsFor("192.168.0.1")
		a.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:aa:bb:cc:dd:ee"}`)
		again, err := s.AcquireLease(ctx, cfg, a, subnet.AcquireOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if again.Subnet != first.Subnet || again.EtcdLease != first.EtcdLease {
			t.Errorf("got %s/%x, want %s/%x", again.Subnet, again.EtcdLease, first.Subnet, first.EtcdLease)
		}
		resp, err := cli.Get(ctx, testPrefix+"/subnets/"+first.Key())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(resp.Kvs[0].Value), "02:aa:bb:cc:dd:ee") || resp.Kvs[0].Lease != first.EtcdLease {
			t.Errorf("stored %s (lease %x), want the new VtepMAC under lease %x", resp.Kvs[0].Value, resp.Kvs[0].Lease, first.EtcdLease)
		}
	})
	t.Run("hint honoured when free", func(t *testing.T) {
		// A free subnet: the random pick for the first node may have
		// taken 10.5.42.0/24, never both.
		hint := netip.MustParsePrefix("10.5.42.0/24")
		if first.Subnet == hint {
			hint = netip.MustParsePrefix("10.5.43.0/24")
		}
		l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.2"), subnet.AcquireOptions{Hint: hint})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet != hint {
			t.Errorf("got %s, want the hint %s", l.Subnet, hint)
		}
		l3, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.3"), subnet.AcquireOptions{Hint: hint})
		if err != nil {
			t.Fatal(err)
		}
		if l3.Subnet == hint {
			t.Errorf("a taken hint %s was handed to a second node", hint)
		}
	})
	t.Run("release deletes the key", func(t *testing.T) {
		if err := s.ReleaseLease(ctx, first); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, testPrefix+"/subnets/"+first.Key())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Errorf("key %s still present after release", first.Key())
		}
	})
}

func TestReservation(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	// Three subnets: 10.5.6.0, 10.5.7.0 (reserved), 10.5.8.0.
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.6.0","SubnetMax":"10.5.8.0"}`)
	ctx := testCtx(t, 30*time.Second)
	resKey := subnetKey("10.5.7.0/24")
	resVal := leaseValue(t, "192.168.9.9")
	put(t, cli, resKey, resVal)

	var got []netip.Prefix
	for _, ip := range []string{"192.168.0.1", "192.168.0.2"} {
		l, err := s.AcquireLease(ctx, cfg, attrsFor(ip), subnet.AcquireOptions{Hint: netip.MustParsePrefix("10.5.7.0/24")})
		if err != nil {
			t.Fatalf("acquire for %s: %v", ip, err)
		}
		got = append(got, l.Subnet)
	}
	for _, p := range got {
		if p.String() == "10.5.7.0/24" {
			t.Fatalf("reserved subnet handed to another node: %v", got)
		}
	}
	_, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.3"), subnet.AcquireOptions{})
	want := "no free subnet: network 10.5.0.0/16 with SubnetLen 24 has 3 subnets in [10.5.6.0, 10.5.8.0], held by 2 leases and 1 reservations"
	if !errors.Is(err, ErrNoFreeSubnet) || err.Error() != want {
		t.Fatalf("third acquire: got %v, want %q", err, want)
	}

	l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.9.9"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "10.5.7.0/24" || !l.Reserved() {
		t.Fatalf("owner got %s (etcd lease %x), want the reservation 10.5.7.0/24 with no etcd lease", l.Subnet, l.EtcdLease)
	}
	// KeepLease and ReleaseLease leave the reservation alone.
	kctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	_ = s.KeepLease(kctx, cfg, l, time.Hour, func(*subnet.Lease) { t.Errorf("onChange called for a reservation") })
	cancel()
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, resKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || string(resp.Kvs[0].Value) != resVal || resp.Kvs[0].Version != 1 {
		t.Fatalf("reservation modified: %v", resp.Kvs)
	}

	// A fresh reservation names only the address (as 'weft leases reserve'
	// writes it): the node that takes it fills in its backend data, and the
	// key still has no etcd lease.
	bare := `{"PublicIP":"192.168.9.9","PublicIPv6":null,"BackendType":"vxlan"}`
	put(t, cli, resKey, bare)
	l, err = s.AcquireLease(ctx, cfg, attrsFor("192.168.9.9"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "10.5.7.0/24" || !l.Reserved() || len(l.Attrs.BackendData) == 0 {
		t.Fatalf("owner got %+v, want the reservation with its backend data", l)
	}
	resp, err = cli.Get(ctx, resKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || string(resp.Kvs[0].Value) != resVal {
		t.Fatalf("reservation after the node took it: %v, want %s with no etcd lease", resp.Kvs, resVal)
	}
}

func TestWatchExpiry(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	s, _ := newTestStore(t, srv.Client())
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 30*time.Second)
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)

	l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m.waitFor(t, 5*time.Second, "the lease to appear", hasPeer(l.Subnet.String()))
	start := time.Now()
	m.waitFor(t, 10*time.Second, "the lease to expire", lacksPeer(l.Subnet.String()))
	t.Logf("removed %v after being seen", time.Since(start).Round(10*time.Millisecond))
	m.mu.Lock()
	last := m.events[len(m.events)-1]
	m.mu.Unlock()
	if last.Type != subnet.EventRemoved || last.Lease.Subnet != l.Subnet {
		t.Errorf("last event %v %s, want removed %s", last.Type, last.Lease.Subnet, l.Subnet)
	}
}

func TestWatchCompactionWhileBehind(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	logs := &logBuffer{}
	opts := testOptions(logs)
	var restarts atomic.Int32
	opts.OnWatchRestart = func(reason string) {
		if reason == "compacted" {
			restarts.Add(1)
		}
	}
	s := NewWithClient(cli, opts)
	cfg := mustConfig(t, cfg50)

	for i := 1; i <= 10; i++ {
		put(t, cli, subnetKey(fmt.Sprintf("10.5.%d.0/24", i)), leaseValue(t, fmt.Sprintf("192.168.0.%d", i)))
	}
	m := newPeerModel()
	release := make(chan struct{})
	var once sync.Once
	startWatch(t, s, cfg, func(evs []subnet.Event) {
		m.apply(evs)
		once.Do(func() { <-release }) // the watcher falls behind on its first batch
	})
	m.waitFor(t, 5*time.Second, "the snapshot", func(p map[netip.Prefix]subnet.LeaseAttrs) bool { return len(p) == 10 })

	// While it is stuck: delete some, change some, add some, then compact.
	for i := 1; i <= 3; i++ {
		del(t, cli, subnetKey(fmt.Sprintf("10.5.%d.0/24", i)))
	}
	for i := 4; i <= 6; i++ {
		put(t, cli, subnetKey(fmt.Sprintf("10.5.%d.0/24", i)), leaseValue(t, fmt.Sprintf("192.168.1.%d", i)))
	}
	for i := 20; i <= 25; i++ {
		put(t, cli, subnetKey(fmt.Sprintf("10.5.%d.0/24", i)), leaseValue(t, fmt.Sprintf("192.168.0.%d", i)))
	}
	put(t, cli, subnetKey("10.5.26.0/24"), "added then deleted")
	del(t, cli, subnetKey("10.5.26.0/24"))
	srv.Compact(testCtx(t, 10*time.Second))
	close(release)

	want := etcdPeers(t, cli, cfg)
	m.waitFor(t, 10*time.Second, "the watcher to catch up", func(p map[netip.Prefix]subnet.LeaseAttrs) bool { return samePeers(p, want) })
	if restarts.Load() == 0 {
		t.Errorf("the watcher never saw the compaction")
	}
	// Later changes still arrive.
	put(t, cli, subnetKey("10.5.30.0/24"), leaseValue(t, "192.168.0.30"))
	m.waitFor(t, 5*time.Second, "a change after the compaction", hasPeer("10.5.30.0/24"))
	if !samePeers(m.snapshot(), etcdPeers(t, cli, cfg)) {
		t.Errorf("watcher's peers differ from etcd's")
	}
}

func TestWatchSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, logs := newTestStore(t, cli)
	cfg := mustConfig(t, cfg50)
	put(t, cli, subnetKey("10.5.1.0/24"), leaseValue(t, "192.168.0.1"))
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	m.waitFor(t, 5*time.Second, "the snapshot", hasPeer("10.5.1.0/24"))

	srv.Stop()
	time.Sleep(1500 * time.Millisecond)
	srv.Restart()
	put(t, cli, subnetKey("10.5.2.0/24"), leaseValue(t, "192.168.0.2"))
	del(t, cli, subnetKey("10.5.1.0/24"))
	m.waitFor(t, 15*time.Second, "changes after the restart", func(p map[netip.Prefix]subnet.LeaseAttrs) bool {
		return hasPeer("10.5.2.0/24")(p) && lacksPeer("10.5.1.0/24")(p)
	})
	if n := logs.count("watching leases"); n > 4 {
		t.Errorf("%d log lines about the watch across one restart, want a few:\n%s", n, logs)
	}
}

func TestKeepLease(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 60*time.Second)

	l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan *subnet.Lease, 4)
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.KeepLease(kctx, cfg, l, time.Second, func(nl *subnet.Lease) { changes <- nl })
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("KeepLease returned %v, want context.Canceled", err)
		}
	}()
	key := testPrefix + "/subnets/" + l.Key()
	expectKey := func(t *testing.T, lease int64) {
		t.Helper()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != lease {
			t.Fatalf("key %s: %v, want it bound to etcd lease %x", key, resp.Kvs, lease)
		}
	}

	t.Run("renews the same etcd lease past its TTL", func(t *testing.T) {
		time.Sleep(5 * time.Second)
		expectKey(t, l.EtcdLease)
		select {
		case nl := <-changes:
			t.Fatalf("unexpected onChange: %+v", nl)
		default:
		}
	})
	cur := l
	t.Run("key deleted by hand", func(t *testing.T) {
		del(t, cli, key)
		select {
		case nl := <-changes:
			if nl.Subnet != l.Subnet {
				t.Errorf("re-acquired %s, want the same subnet %s", nl.Subnet, l.Subnet)
			}
			expectKey(t, nl.EtcdLease)
			cur = nl
		case <-time.After(10 * time.Second):
			t.Fatal("no re-acquisition after the key was deleted")
		}
	})
	t.Run("etcd lease revoked", func(t *testing.T) {
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(cur.EtcdLease)); err != nil {
			t.Fatal(err)
		}
		select {
		case nl := <-changes:
			if nl.Subnet != l.Subnet || nl.EtcdLease == cur.EtcdLease {
				t.Errorf("re-acquired %s/%x, want %s under a new etcd lease", nl.Subnet, nl.EtcdLease, l.Subnet)
			}
			expectKey(t, nl.EtcdLease)
		case <-time.After(10 * time.Second):
			t.Fatal("no re-acquisition after the etcd lease was revoked")
		}
	})
}

func TestInvalidLeasesSkipped(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, logs := newTestStore(t, cli)
	// Two subnets: 10.5.2.0 (a good lease) and 10.5.3.0 (garbage).
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.2.0","SubnetMax":"10.5.3.0"}`)
	ctx := testCtx(t, 30*time.Second)
	bad := map[string]string{
		subnetKey("10.5.3.0/24"):                  `{"PublicIP":`,
		testPrefix + "/subnets/not-a-subnet":      leaseValue(t, "192.168.0.7"),
		subnetKey("10.5.4.0/24"):                  `{"PublicIP":"127.0.0.1","BackendType":"vxlan"}`,
		subnetKey("10.5.5.0/24"):                  `{"PublicIP":"192.168.0.5","BackendType":"host-gw"}`,
		testPrefix + "/subnets/10.6.0.0-24":       leaseValue(t, "192.168.0.6"),
		testPrefix + "/subnets/10.5.6.0-25":       leaseValue(t, "192.168.0.8"),
		testPrefix + "/subnets/10.5.7.0-24&junk":  leaseValue(t, "192.168.0.9"),
		testPrefix + "/subnets/10.5.8.0-24&::-64": `{"PublicIP":"192.168.0.10","BackendType":"vxlan"`,
	}
	for k, v := range bad {
		put(t, cli, k, v)
	}
	put(t, cli, subnetKey("10.5.2.0/24"), leaseValue(t, "192.168.0.2"))
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	m.waitFor(t, 5*time.Second, "the good lease", hasPeer("10.5.2.0/24"))
	if got := m.snapshot(); len(got) != 1 {
		t.Errorf("peers %v, want only 10.5.2.0/24", got)
	}
	put(t, cli, subnetKey("10.5.9.0/24"), leaseValue(t, "192.168.0.19"))
	m.waitFor(t, 5*time.Second, "a later good lease", hasPeer("10.5.9.0/24"))

	// A compaction forces a re-list; the bad keys must not be logged again.
	srv.Compact(ctx)
	put(t, cli, subnetKey("10.5.10.0/24"), leaseValue(t, "192.168.0.20"))
	m.waitFor(t, 5*time.Second, "a lease after compaction", hasPeer("10.5.10.0/24"))
	for k := range bad {
		if n := logs.count("skipping invalid lease", "key="+k+" "); n != 1 {
			t.Errorf("key %s logged %d times, want once", k, n)
		}
	}
	// A good lease turning bad is removed.
	put(t, cli, subnetKey("10.5.9.0/24"), `{"PublicIP":"0.0.0.0","BackendType":"vxlan"}`)
	m.waitFor(t, 5*time.Second, "the lease turned bad to be removed", lacksPeer("10.5.9.0/24"))
	if len(m.snapshot()) != 2 {
		t.Errorf("peers %v, want 10.5.2.0/24 and 10.5.10.0/24", m.snapshot())
	}

	// The garbage key still holds its subnet.
	_, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.50"), subnet.AcquireOptions{Hint: netip.MustParsePrefix("10.5.3.0/24")})
	if !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("acquire got %v, want ErrNoFreeSubnet (10.5.3.0/24 is held by a garbage key)", err)
	}
}

func TestClusterOneMemberDown(t *testing.T) {
	t.Parallel()
	c := etcdtest.StartCluster(t, 3)
	logs := &logBuffer{}
	opts := testOptions(logs)
	opts.Endpoints = c.Endpoints()
	opts.DialTimeout = 5 * time.Second
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 60*time.Second)
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	l1, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.waitFor(t, 5*time.Second, "the first lease", hasPeer(l1.Subnet.String()))

	// Stop the leader: the watch (WithRequireLeader) and the next requests
	// must move on to the new leader.
	leader := c.Members[0]
	for _, mem := range c.Members {
		st, err := c.Client().Status(ctx, mem.ClientURL)
		if err == nil && st.Leader == st.Header.MemberId {
			leader = mem
		}
	}
	leader.Stop()
	for i := 0; ; i++ {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Client().Put(pctx, subnetKey("10.5.49.0/24"), leaseValue(t, "192.168.0.49"))
		cancel()
		if err == nil {
			break
		}
		if i == 10 {
			t.Fatalf("put with the leader stopped: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.waitFor(t, 15*time.Second, "a put after the leader stopped", hasPeer("10.5.49.0/24"))
	var l2 *subnet.Lease
	// The first request may land on the stopped member before the client
	// notices; a caller (the agent) retries, and so do we, briefly.
	for i := 0; i < 20; i++ {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		l2, err = s.AcquireLease(actx, cfg, attrsFor("192.168.0.2"), subnet.AcquireOptions{})
		cancel()
		if err == nil {
			break
		}
		t.Logf("acquire with one member down, attempt %d: %v", i+1, err)
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	m.waitFor(t, 15*time.Second, "a lease made with one member down", hasPeer(l2.Subnet.String()))
}

func TestTLSAndAuth(t *testing.T) {
	t.Parallel()
	certs := etcdtest.NewCerts(t)
	srv := etcdtest.Start(t, etcdtest.WithTLS(certs), etcdtest.WithAuth("rootpw"))
	ctx := testCtx(t, 30*time.Second)
	admin := srv.Client()
	// A user that may only touch the prefix.
	steps := []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "weft"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "weft", testPrefix, clientv3.GetPrefixRangeEnd(testPrefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "weft", "weftpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "weft", "weft"); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	put(t, admin, testPrefix+"/config", cfg50)

	logs := &logBuffer{}
	opts := testOptions(logs)
	opts.Endpoints = srv.Endpoints()
	opts.CAFile, opts.CertFile, opts.KeyFile = certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile
	opts.Username, opts.Password = "weft", "weftpw"
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.waitFor(t, 5*time.Second, "the lease over TLS with auth", hasPeer(l.Subnet.String()))

	t.Run("wrong password refused", func(t *testing.T) {
		o := opts
		o.Password = "nope"
		s2, err := New(o)
		if err == nil {
			defer s2.Close()
			_, err = s2.AcquireLease(ctx, cfg, attrsFor("192.168.0.2"), subnet.AcquireOptions{})
		}
		if err == nil {
			t.Fatal("a wrong password was accepted")
		}
	})
	t.Run("no client certificate refused", func(t *testing.T) {
		o := opts
		o.CertFile, o.KeyFile = "", ""
		o.DialTimeout = 2 * time.Second
		s2, err := New(o)
		if err == nil {
			defer s2.Close()
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err = s2.AcquireLease(actx, cfg, attrsFor("192.168.0.2"), subnet.AcquireOptions{})
		}
		if err == nil {
			t.Fatal("a client without a certificate was accepted")
		}
	})
}

func TestGetNetworkConfigWaits(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	logs := &logBuffer{}
	opts := testOptions(logs)
	var gets atomic.Int64 // reads of the config key
	opts.ObserveRequest = func(op string, _ time.Duration) {
		if op == "get" {
			gets.Add(1)
		}
	}
	s := NewWithClient(cli, opts)
	ctx := testCtx(t, 30*time.Second)
	type result struct {
		cfg *subnet.Config
		err error
	}
	res := make(chan result, 1)
	go func() {
		cfg, err := s.GetNetworkConfig(ctx)
		res <- result{cfg, err}
	}()
	// Each situation lasts several reads, so that "logged once" means the
	// repeats were not logged.
	waitGets := func(what string, more int64) {
		t.Helper()
		want := gets.Load() + more
		deadline := time.Now().Add(10 * time.Second)
		for gets.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("GetNetworkConfig did not read the config %d more times %s", more, what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitGets("while it is missing", 3)
	put(t, cli, testPrefix+"/config", `{"Network":"10.5.0.0/29"}`)
	waitGets("while it is invalid", 3)
	put(t, cli, testPrefix+"/config", `{"Network":"10.5.0.0/16","Colour":"blue"}`)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.cfg.Network.String() != "10.5.0.0/16" {
		t.Errorf("got network %s", r.cfg.Network)
	}
	if n := logs.count("waiting for the network config", "does not exist"); n != 1 {
		t.Errorf("missing config logged %d times, want once:\n%s", n, logs)
	}
	if n := logs.count("waiting for the network config", "10.5.0.0/29"); n != 1 {
		t.Errorf("invalid config logged %d times, want once:\n%s", n, logs)
	}
	if n := logs.count("unknown fields", "Colour"); n != 1 {
		t.Errorf("unknown field logged %d times, want once:\n%s", n, logs)
	}
}

func TestWatchConfig(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	ctx := testCtx(t, 30*time.Second)
	put(t, cli, testPrefix+"/config", cfg50)
	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type change struct {
		cfg *subnet.Config
		err error
	}
	changes := make(chan change, 10)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.WatchConfig(wctx, cfg, func(c *subnet.Config, err error) { changes <- change{c, err} })
	}()
	defer func() { cancel(); <-done }()
	next := func() change {
		select {
		case c := <-changes:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no config change reported")
			return change{}
		}
	}
	// Same config re-written in another form: no report.
	put(t, cli, testPrefix+"/config", `{"Backend":{"Type":"vxlan"},"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.50.0"}`)
	put(t, cli, testPrefix+"/config", `{"Network":"10.6.0.0/16"}`)
	if c := next(); c.err != nil || c.cfg.Network.String() != "10.6.0.0/16" {
		t.Errorf("got %+v, want the new network", c)
	}
	del(t, cli, testPrefix+"/config")
	if c := next(); !errors.Is(c.err, ErrConfigDeleted) {
		t.Errorf("got %+v, want ErrConfigDeleted", c)
	}
}
