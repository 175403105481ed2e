package etcd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// dualAttrs is a dual-stack node's attributes: PublicIP ip4, PublicIPv6 ip6
// and a vxlan MAC per family.
func dualAttrs(ip4, ip6 string) subnet.LeaseAttrs {
	a := subnet.LeaseAttrs{BackendType: "vxlan"}
	if ip4 != "" {
		a = attrsFor(ip4)
	}
	if ip6 != "" {
		v6 := netip.MustParseAddr(ip6)
		b := v6.As16()
		a.PublicIPv6 = &v6
		a.BackendV6Data = []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"06:00:%02x:%02x:%02x:%02x"}`, b[12], b[13], b[14], b[15]))
	}
	return a
}

// TestDualStackKeyAndValueGolden: a dual-stack lease is written under
// flanneld's key (v0.28.9 pkg/subnet/subnet.go MakeSubnetKey; the case of
// subnet_test.go TestMakeSubnetKey) with flanneld's value (pkg/lease/lease.go
// LeaseAttrs through json.Marshal), and read back from it.
func TestDualStackKeyAndValueGolden(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	cfg := mustConfig(t, `{"Network":"10.12.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12::/40","IPv6SubnetLen":56}`)
	ctx := testCtx(t, 30*time.Second)
	v6 := netip.MustParseAddr("2001:db8::10")
	attrs := subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr("192.168.1.10"), PublicIPv6: &v6, BackendType: "vxlan",
		BackendData:   []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`),
		BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}`),
	}
	l, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{
		Hint: netip.MustParsePrefix("10.12.13.0/24"), HintIPv6: netip.MustParsePrefix("fd00:12:13::/56")})
	if err != nil {
		t.Fatal(err)
	}
	const key = testPrefix + "/subnets/10.12.13.0-24&fd00:12:13::-56"
	const value = `{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}`
	resp, err := cli.Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != key || string(resp.Kvs[0].Value) != value {
		t.Fatalf("etcd holds %v, want %s = %s", resp.Kvs, key, value)
	}
	if l.Key() != strings.TrimPrefix(key, testPrefix+"/subnets/") {
		t.Errorf("lease key %q", l.Key())
	}
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	m.waitFor(t, 5*time.Second, "the dual-stack lease", hasPeer("10.12.13.0/24"))
	m.mu.Lock()
	ev := m.events[0]
	m.mu.Unlock()
	if ev.Lease.Subnet != l.Subnet || ev.Lease.IPv6Subnet != l.IPv6Subnet || !ev.Lease.Attrs.Equal(attrs) {
		t.Errorf("watched %+v, want %+v", ev.Lease, l)
	}
}

// TestDualStackConcurrentAcquire: racing nodes never share a subnet of
// either family.
func TestDualStackConcurrentAcquire(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	s, _ := newTestStore(t, srv.Client())
	// 50 IPv4 subnets, 15 IPv6 subnets (fd00:5::/60 in /64s, from the second).
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.50.0","EnableIPv6":true,"IPv6Network":"fd00:5::/60"}`)
	ctx := testCtx(t, 60*time.Second)
	const n = 24
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		v4s     = map[netip.Prefix]int{}
		v6s     = map[netip.Prefix]int{}
		exhaust int
		other   []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			l, err := s.AcquireLease(ctx, cfg, dualAttrs(fmt.Sprintf("192.168.0.%d", i+1), fmt.Sprintf("2001:db8::%x", i+1)), subnet.AcquireOptions{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNoFreeSubnet):
				exhaust++
				if !strings.Contains(err.Error(), "IPv6 network fd00:5::/60") {
					other = append(other, err)
				}
			case err != nil:
				other = append(other, err)
			default:
				v4s[l.Subnet]++
				v6s[l.IPv6Subnet]++
			}
		})
	}
	close(start)
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", other)
	}
	if len(v6s) != 15 || len(v4s) != 15 || exhaust != n-15 {
		t.Fatalf("%d IPv4 and %d IPv6 subnets handed out, %d exhaustion errors; want 15, 15, %d", len(v4s), len(v6s), exhaust, n-15)
	}
	resp, err := srv.Client().Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	seen4, seen6 := map[netip.Prefix]string{}, map[netip.Prefix]string{}
	for _, kv := range resp.Kvs {
		v4, v6, err := subnet.ParseSubnetKey(string(kv.Key[len(testPrefix+"/subnets/"):]))
		if err != nil || !v4.IsValid() || !v6.IsValid() {
			t.Fatalf("key %s: %v, %s, %s", kv.Key, err, v4, v6)
		}
		if k, dup := seen4[v4]; dup {
			t.Errorf("%s held by %s and %s", v4, k, kv.Key)
		}
		if k, dup := seen6[v6]; dup {
			t.Errorf("%s held by %s and %s", v6, k, kv.Key)
		}
		seen4[v4], seen6[v6] = string(kv.Key), string(kv.Key)
	}
	if len(resp.Kvs) != 15 {
		t.Errorf("etcd holds %d keys, want 15", len(resp.Kvs))
	}
}

// TestTurningIPv6OnKeepsIPv4: a node of an IPv4 cluster that turns IPv6 on
// keeps its IPv4 subnet (flanneld deletes the lease and renumbers the node:
// COMPAT-WAVE2 5.14), under one key replaced in one transaction; turning
// IPv6 off again keeps it too.
func TestTurningIPv6OnKeepsIPv4(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, logs := newTestStore(t, cli)
	ctx := testCtx(t, 30*time.Second)
	v4cfg := mustConfig(t, cfg50)
	dualCfg := mustConfig(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.50.0","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"vxlan"}}`)
	// Another node of the IPv4 cluster, still IPv4-only.
	other, err := s.AcquireLease(ctx, v4cfg, attrsFor("192.168.0.9"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.AcquireLease(ctx, v4cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := newPeerModel()
	startWatch(t, s, dualCfg, m.apply)
	m.waitFor(t, 5*time.Second, "both IPv4-only leases as peers of the dual-stack config", func(p map[netip.Prefix]subnet.LeaseAttrs) bool { return len(p) == 2 })

	dual, err := s.AcquireLease(ctx, dualCfg, dualAttrs("192.168.0.1", "2001:db8::1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dual.Subnet != first.Subnet || !dualCfg.ContainsIPv6(dual.IPv6Subnet) {
		t.Fatalf("with IPv6 on the node got %s and %s, want its IPv4 subnet %s kept and an IPv6 subnet", dual.Subnet, dual.IPv6Subnet, first.Subnet)
	}
	keys := func() []string {
		resp, err := cli.Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, strings.TrimPrefix(string(kv.Key), testPrefix+"/subnets/"))
		}
		return out
	}
	got := keys()
	if len(got) != 2 || !strings.Contains(strings.Join(got, " "), dual.Key()) || !strings.Contains(strings.Join(got, " "), other.Key()) {
		t.Fatalf("keys %v, want %s and %s (the old key replaced)", got, dual.Key(), other.Key())
	}
	if logs.count("re-keyed this node's lease, keeping its IPv4 subnet") != 1 {
		t.Errorf("the re-keying is not logged once:\n%s", logs)
	}
	m.waitFor(t, 5*time.Second, "the node's lease to carry IPv6", func(p map[netip.Prefix]subnet.LeaseAttrs) bool {
		a, ok := p[first.Subnet]
		return ok && a.IPv6() == netip.MustParseAddr("2001:db8::1") && len(p) == 2
	})
	// A restart with IPv6 still on takes the same key back.
	again, err := s.AcquireLease(ctx, dualCfg, dualAttrs("192.168.0.1", "2001:db8::1"), subnet.AcquireOptions{})
	if err != nil || again.Key() != dual.Key() || again.EtcdLease != dual.EtcdLease {
		t.Fatalf("restart got %+v, %v; want key %s under etcd lease %x", again, err, dual.Key(), dual.EtcdLease)
	}
	// IPv6 turned off again: the IPv4 subnet stays.
	back, err := s.AcquireLease(ctx, v4cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil || back.Subnet != first.Subnet || back.IPv6Subnet.IsValid() || back.Key() != first.Key() {
		t.Fatalf("with IPv6 off again got %+v, %v; want %s", back, err, first.Key())
	}
	if got := keys(); len(got) != 2 {
		t.Errorf("keys %v, want two", got)
	}
}

// TestDualStackGuardsIPv4Subnet: a dual-stack key is never created for an
// IPv4 subnet that an IPv4-only key holds (the two keys differ, so the
// create-if-absent transaction alone would not see it).
func TestDualStackGuardsIPv4Subnet(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56"}`)
	put(t, cli, subnetKey("10.5.3.0/24"), leaseValue(t, "192.168.0.3"))
	sn, err := s.list(ctx, cfg, netip.MustParseAddr("192.168.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	a := &acquirer{s: s, cfg: cfg, ttl: time.Minute}
	defer a.release()
	attrs := dualAttrs("192.168.0.1", "2001:db8::1")
	val, _ := attrs.Marshal()
	l, err := a.create(ctx, sn, netip.MustParsePrefix("10.5.3.0/24"), netip.MustParsePrefix("fd00:5:0:7::/64"), attrs, val)
	if err != nil || l != nil {
		t.Fatalf("create over an IPv4-only key = %+v, %v; want a lost race", l, err)
	}
	if !sn.v4.set[netip.MustParsePrefix("10.5.3.0/24")] || a.lost != 1 {
		t.Errorf("the lost subnet is not marked taken")
	}
}

// TestIPv6OnlyEtcd: an IPv6-only network works in etcd mode. Keys are
// flanneld's ("0.0.0.0-0&<v6>-<len>", PublicIP "0.0.0.0"), and each node
// takes back its own lease by PublicIPv6 (flanneld matches PublicIP only,
// so its IPv6-only nodes, all 0.0.0.0, would take each other's:
// COMPAT-WAVE2 5.13).
func TestIPv6OnlyEtcd(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:6::/56","Backend":{"Type":"vxlan"}}`)
	a1, a2 := dualAttrs("", "2001:db8::1"), dualAttrs("", "2001:db8::2")
	l1, err := s.AcquireLease(ctx, cfg, a1, subnet.AcquireOptions{HintIPv6: netip.MustParsePrefix("fd00:6:0:1::/64")})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := s.AcquireLease(ctx, cfg, a2, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Subnet.IsValid() || l1.IPv6Subnet == l2.IPv6Subnet || !cfg.ContainsIPv6(l2.IPv6Subnet) {
		t.Fatalf("leases %+v and %+v", l1, l2)
	}
	const key = testPrefix + "/subnets/0.0.0.0-0&fd00:6:0:1::-64"
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", key, resp, err)
	}
	const value = `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:01"}}`
	if string(resp.Kvs[0].Value) != value {
		t.Errorf("value %s, want %s", resp.Kvs[0].Value, value)
	}
	for _, tt := range []struct {
		a subnet.LeaseAttrs
		l *subnet.Lease
	}{{a2, l2}, {a1, l1}} {
		again, err := s.AcquireLease(ctx, cfg, tt.a, subnet.AcquireOptions{})
		if err != nil || again.Key() != tt.l.Key() || again.EtcdLease != tt.l.EtcdLease {
			t.Errorf("node %s took back %+v, %v; want its own %s", tt.a.IPv6(), again, err, tt.l.Key())
		}
		found, err := s.LookupLease(ctx, cfg, tt.a.IPv6())
		if err != nil || found == nil || found.Key() != tt.l.Key() {
			t.Errorf("LookupLease(%s) = %+v, %v; want %s", tt.a.IPv6(), found, err, tt.l.Key())
		}
	}
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	m.waitFor(t, 5*time.Second, "both IPv6-only peers", func(p map[netip.Prefix]subnet.LeaseAttrs) bool {
		return len(p) == 2 && p[l1.IPv6Subnet].IPv6() == a1.IPv6() && p[l2.IPv6Subnet].IPv6() == a2.IPv6()
	})
	if _, err := s.AcquireLease(ctx, cfg, subnet.LeaseAttrs{BackendType: "vxlan"}, subnet.AcquireOptions{}); err == nil || !strings.Contains(err.Error(), "no PublicIPv6") {
		t.Errorf("acquire without PublicIPv6: %v", err)
	}
}

// TestBadIPv6PeerSkipped: a dual-stack peer whose PublicIPv6 or v6 MAC is
// bad is logged once and skipped; the others are unaffected.
func TestBadIPv6PeerSkipped(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	logs := &logBuffer{}
	opts := testOptions(logs)
	opts.Validator = func(typ string, data json.RawMessage) error {
		if strings.Contains(string(data), "ff:ff:ff:ff:ff:ff") {
			return errors.New("VtepMAC ff:ff:ff:ff:ff:ff is not unicast")
		}
		return nil
	}
	s := NewWithClient(cli, opts)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56"}`)
	key := func(v4, v6 string) string {
		return testPrefix + "/subnets/" + subnet.SubnetKey(netip.MustParsePrefix(v4), netip.MustParsePrefix(v6))
	}
	good := dualAttrs("192.168.0.2", "2001:db8::2")
	gv, _ := good.Marshal()
	put(t, cli, key("10.5.2.0/24", "fd00:5:0:2::/64"), string(gv))
	bad := map[string]string{
		key("10.5.3.0/24", "fd00:5:0:3::/64"): `{"PublicIP":"192.168.0.3","PublicIPv6":"fe80::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:03"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:03"}}`,
		key("10.5.4.0/24", "fd00:5:0:4::/64"): `{"PublicIP":"192.168.0.4","PublicIPv6":"2001:db8::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}}`,
		key("10.5.5.0/24", "fd00:5:0:5::/64"): `{"PublicIP":"192.168.0.5","PublicIPv6":"2001:db8::zz","BackendType":"vxlan"}`,
		key("10.5.6.0/24", "fd00:6::/64"):     `{"PublicIP":"192.168.0.6","PublicIPv6":"2001:db8::6","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:06"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:06"}}`,
	}
	for k, v := range bad {
		put(t, cli, k, v)
	}
	m := newPeerModel()
	startWatch(t, s, cfg, m.apply)
	m.waitFor(t, 5*time.Second, "the good peer", hasPeer("10.5.2.0/24"))
	// A later good peer arrives, and a compaction forces a re-list.
	g7 := dualAttrs("192.168.0.7", "2001:db8::7")
	v7, _ := g7.Marshal()
	put(t, cli, key("10.5.7.0/24", "fd00:5:0:7::/64"), string(v7))
	srv.Compact(ctx)
	put(t, cli, subnetKey("10.5.8.0/24"), leaseValue(t, "192.168.0.8"))
	m.waitFor(t, 5*time.Second, "the later peers", func(p map[netip.Prefix]subnet.LeaseAttrs) bool { return len(p) == 3 })
	if got := m.snapshot(); got[netip.MustParsePrefix("10.5.2.0/24")].IPv6() != good.IPv6() {
		t.Errorf("peers %v", got)
	}
	for k := range bad {
		if n := logs.count("skipping invalid lease", "key="+k+" "); n != 1 {
			t.Errorf("key %s logged %d times, want once\n%s", k, n, logs)
		}
	}
}

// TestDualStackReservation: a node takes the dual-stack reservation for its
// PublicIP as it stands; an IPv4-only reservation in a dual-stack network
// is refused with what to do.
func TestDualStackReservation(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s, _ := newTestStore(t, cli)
	ctx := testCtx(t, 30*time.Second)
	cfg := mustConfig(t, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56"}`)
	key := testPrefix + "/subnets/10.5.9.0-24&fd00:5:0:9::-64"
	put(t, cli, key, `{"PublicIP":"192.168.0.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan"}`)
	l, err := s.AcquireLease(ctx, cfg, dualAttrs("192.168.0.1", "2001:db8::1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Key() != "10.5.9.0-24&fd00:5:0:9::-64" || !l.Reserved() {
		t.Errorf("took %+v, want the reservation", l)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || !strings.Contains(string(resp.Kvs[0].Value), `"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:01"}`) {
		t.Errorf("reservation now %v, %v; want the node's attributes, still without an etcd lease", resp, err)
	}
	put(t, cli, subnetKey("10.5.10.0/24"), `{"PublicIP":"192.168.0.2","PublicIPv6":null,"BackendType":"vxlan"}`)
	_, err = s.AcquireLease(ctx, cfg, dualAttrs("192.168.0.2", "2001:db8::2"), subnet.AcquireOptions{})
	if err == nil || !strings.Contains(err.Error(), "has no IPv6 subnet of fd00:5::/56, but IPv6 is on") {
		t.Errorf("an IPv4-only reservation in a dual-stack network: %v", err)
	}
}
