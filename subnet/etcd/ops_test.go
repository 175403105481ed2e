package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// opsEnv starts an etcd and returns its client, a store over it and a
// context for the test.
func opsEnv(t *testing.T) (*clientv3.Client, *Store, context.Context) {
	t.Helper()
	cli := etcdtest.Start(t).Client()
	s, _ := newTestStore(t, cli)
	return cli, s, testCtx(t, 20*time.Second)
}

// TestReadConfig reads the config once, and says why when it cannot.
func TestReadConfig(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	if _, err := s.ReadConfig(ctx); err == nil || !strings.Contains(err.Error(), testPrefix+"/config does not exist") {
		t.Errorf("missing config: %v", err)
	}
	put(t, cli, testPrefix+"/config", `{"Network":"10.5.0.0/16","SubnetLen":99}`)
	if _, err := s.ReadConfig(ctx); err == nil || !strings.Contains(err.Error(), testPrefix+"/config") {
		t.Errorf("invalid config: %v", err)
	}
	put(t, cli, testPrefix+"/config", cfg50)
	cfg, err := s.ReadConfig(ctx)
	if err != nil || cfg.Network != netip.MustParsePrefix("10.5.0.0/16") {
		t.Errorf("ReadConfig = %+v, %v", cfg, err)
	}
}

// TestGetLease returns the lease on a subnet as stored: nothing, a lease, a
// reservation, or an undecodable value beside its error.
func TestGetLease(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	g, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, subnetKey("10.5.1.0/24"), leaseValue(t, "192.168.0.1"), clientv3.WithLease(g.ID))
	res := put(t, cli, subnetKey("10.5.2.0/24"), leaseValue(t, "192.168.0.2"))
	put(t, cli, subnetKey("10.5.3.0/24"), `{"PublicIP":`)

	if l, err := s.GetLease(ctx, netip.MustParsePrefix("10.5.9.0/24")); l != nil || err != nil {
		t.Errorf("absent: %+v, %v; want nil, nil", l, err)
	}
	l, err := s.GetLease(ctx, netip.MustParsePrefix("10.5.1.0/24"))
	if err != nil || l == nil || l.Subnet != netip.MustParsePrefix("10.5.1.0/24") || l.EtcdLease != int64(g.ID) || !l.Attrs.Equal(attrsFor("192.168.0.1")) {
		t.Errorf("lease: %+v, %v", l, err)
	}
	l, err = s.GetLease(ctx, netip.MustParsePrefix("10.5.2.0/24"))
	if err != nil || l == nil || !l.Reserved() || l.ModRevision != res.Header.Revision {
		t.Errorf("reservation: %+v, %v (want revision %d)", l, err, res.Header.Revision)
	}
	l, err = s.GetLease(ctx, netip.MustParsePrefix("10.5.3.0/24"))
	if !errors.Is(err, subnet.ErrInvalidLease) || l == nil || l.Subnet != netip.MustParsePrefix("10.5.3.0/24") {
		t.Errorf("undecodable: %+v, %v; want the lease with ErrInvalidLease", l, err)
	}
}

// TestListLeases lists every key, invalid ones with the reason the watch
// would skip them, and the remaining TTL of each etcd lease.
func TestListLeases(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	logs := &logBuffer{}
	opts := testOptions(logs)
	opts.Validator = func(_ string, data json.RawMessage) error {
		if strings.Contains(string(data), "bad-data") {
			return errors.New("bad backend data")
		}
		return nil
	}
	s := NewWithClient(cli, opts)
	ctx := testCtx(t, 20*time.Second)

	ls, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ls.RawConfig != nil || ls.ConfigErr == nil || len(ls.Entries) != 0 {
		t.Errorf("empty store: %+v", ls)
	}

	put(t, cli, testPrefix+"/config", cfg50)
	g, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, subnetKey("10.5.1.0/24"), leaseValue(t, "192.168.0.1"), clientv3.WithLease(g.ID))
	put(t, cli, subnetKey("10.5.2.0/24"), leaseValue(t, "192.168.0.2"))
	put(t, cli, subnetKey("10.6.0.0/24"), leaseValue(t, "192.168.0.3"), clientv3.WithLease(g.ID))
	put(t, cli, subnetKey("10.5.4.0/24"), `{"PublicIP":"192.168.0.4","BackendType":"vxlan","BackendData":"bad-data"}`)
	put(t, cli, testPrefix+"/subnets/garbage", `{}`)
	put(t, cli, testPrefix+"/other", `{}`)

	ls, err = s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ls.ConfigErr != nil || ls.Config == nil || string(ls.RawConfig) != cfg50 {
		t.Errorf("config: %s, %+v, %v", ls.RawConfig, ls.Config, ls.ConfigErr)
	}
	want := []struct {
		name, invalid string
		ttl           bool
	}{
		{"10.5.1.0-24", "", true},
		{"10.5.2.0-24", "", false},
		{"10.5.4.0-24", "bad backend data", false},
		{"10.6.0.0-24", "not a /24 inside network", true},
		{"garbage", `no "-<len>" suffix`, false},
	}
	if len(ls.Entries) != len(want) {
		t.Fatalf("entries: %+v, want %d", ls.Entries, len(want))
	}
	for i, w := range want {
		e := ls.Entries[i]
		if e.Name != w.name {
			t.Errorf("entry %d is %s, want %s", i, e.Name, w.name)
			continue
		}
		if (w.invalid == "") != (e.Invalid == nil) || (e.Invalid != nil && !strings.Contains(e.Invalid.Error(), w.invalid)) {
			t.Errorf("%s: invalid %v, want %q", e.Name, e.Invalid, w.invalid)
		}
		if w.ttl && (e.TTL < 590*time.Second || e.TTL > 600*time.Second) || !w.ttl && e.TTL != 0 {
			t.Errorf("%s: TTL %v", e.Name, e.TTL)
		}
	}
}

// TestReserveDeleteSubnet writes and deletes operators' reservations.
func TestReserveDeleteSubnet(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	ip := netip.MustParseAddr
	sn := netip.MustParsePrefix

	if _, err := s.Reserve(ctx, sn("10.5.9.0/24"), ip("192.168.0.30")); err == nil || !strings.Contains(err.Error(), "config") {
		t.Errorf("reserve without a config: %v", err)
	}
	put(t, cli, testPrefix+"/config", cfg50)
	g, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	own := leaseValue(t, "192.168.0.10")
	put(t, cli, subnetKey("10.5.3.0/24"), own, clientv3.WithLease(g.ID))

	if what, err := s.Reserve(ctx, sn("10.5.9.0/24"), ip("192.168.0.30")); err != nil || what != "reserved" {
		t.Fatalf("fresh reserve: %q, %v", what, err)
	}
	r, _ := cli.Get(ctx, subnetKey("10.5.9.0/24"))
	if len(r.Kvs) != 1 || r.Kvs[0].Lease != 0 || string(r.Kvs[0].Value) != `{"PublicIP":"192.168.0.30","PublicIPv6":null,"BackendType":"vxlan"}` {
		t.Errorf("reservation stored as %+v", r.Kvs)
	}
	if what, err := s.Reserve(ctx, sn("10.5.9.0/24"), ip("192.168.0.30")); err != nil || what != "already reserved" {
		t.Errorf("second reserve: %q, %v", what, err)
	}
	// The node's own lease becomes a reservation keeping its data.
	if what, err := s.Reserve(ctx, sn("10.5.3.0/24"), ip("192.168.0.10")); err != nil || !strings.Contains(what, "reservation") {
		t.Errorf("reserve own lease: %q, %v", what, err)
	}
	r, _ = cli.Get(ctx, subnetKey("10.5.3.0/24"))
	if len(r.Kvs) != 1 || r.Kvs[0].Lease != 0 || string(r.Kvs[0].Value) != own {
		t.Errorf("converted lease stored as %+v", r.Kvs)
	}
	for _, tc := range []struct {
		name   string
		subnet string
		ip     string
		want   string
	}{
		{"held by another", "10.5.3.0/24", "192.168.0.99", "held by 192.168.0.10"},
		{"outside network", "10.6.0.0/24", "192.168.0.99", "not a /24 inside network"},
		{"wrong length", "10.5.0.0/23", "192.168.0.99", "not a /24"},
		{"loopback ip", "10.5.30.0/24", "127.0.0.1", "unicast IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Reserve(ctx, sn(tc.subnet), ip(tc.ip))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Reserve(%s, %s) = %v, want an error containing %q", tc.subnet, tc.ip, err, tc.want)
			}
		})
	}
	if _, err := s.Reserve(ctx, sn("10.5.3.0/24"), ip("192.168.0.99")); !errors.Is(err, ErrHeld) {
		t.Errorf("held: %v, want ErrHeld", err)
	}

	if err := s.DeleteSubnet(ctx, sn("10.5.9.0/24")); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := s.DeleteSubnet(ctx, sn("10.5.9.0/24")); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
}

// TestReleaseLeaseTaken: ReleaseLease keeps a key that another etcd lease
// holds now and says so; a key already gone is not an error.
func TestReleaseLeaseTaken(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	cfg := mustConfig(t, cfg50)
	put(t, cli, testPrefix+"/config", cfg50)
	l, err := s.AcquireLease(ctx, cfg, attrsFor("192.168.0.1"), subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	key := testPrefix + "/subnets/" + l.Key()
	put(t, cli, key, leaseValue(t, "192.168.0.2"), clientv3.WithLease(other.ID))

	err = s.ReleaseLease(ctx, l)
	if !errors.Is(err, ErrLeaseTaken) {
		t.Fatalf("ReleaseLease of a taken key: %v, want ErrLeaseTaken", err)
	}
	r, _ := cli.Get(ctx, key)
	if len(r.Kvs) != 1 || r.Kvs[0].Lease != int64(other.ID) {
		t.Errorf("the new holder's key was not kept: %+v", r.Kvs)
	}
	// The released etcd lease is revoked all the same.
	if ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLease)); err != nil || ttl.TTL != -1 {
		t.Errorf("old etcd lease: %+v, %v; want it revoked", ttl, err)
	}

	del(t, cli, key)
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Errorf("ReleaseLease of a deleted key: %v", err)
	}
}

// TestPutReservations bulk-loads more leases than one transaction holds:
// every one lands under its flannel key, with no etcd lease, and reads back
// as the same lease.
func TestPutReservations(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	var leases []subnet.Lease
	for i := range 250 {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(i), 0}), 24)
		pub := netip.AddrFrom4([4]byte{192, 168, 1, byte(i)})
		leases = append(leases, subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: pub, BackendType: "host-gw"}})
	}
	if err := s.PutReservations(ctx, leases); err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(ctx, testPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != len(leases) {
		t.Fatalf("%d keys stored, want %d", len(r.Kvs), len(leases))
	}
	for _, l := range []subnet.Lease{leases[0], leases[249]} {
		kv, err := cli.Get(ctx, subnetKey(l.Subnet.String()))
		if err != nil || len(kv.Kvs) != 1 {
			t.Fatalf("reading %s: %v %v", l.Subnet, kv, err)
		}
		if kv.Kvs[0].Lease != 0 {
			t.Errorf("%s stored under an etcd lease", l.Subnet)
		}
		want := `{"PublicIP":"` + l.Attrs.PublicIP.String() + `","PublicIPv6":null,"BackendType":"host-gw"}`
		if got := string(kv.Kvs[0].Value); got != want {
			t.Errorf("%s stored as %s, want %s", l.Subnet, got, want)
		}
	}
}
