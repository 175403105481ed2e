package etcd

import (
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/etcdtest"
)

// flanneldValue is a lease value byte for byte as flanneld v0.28.9 writes it,
// with a random VTEP MAC of the kind flanneld takes.
func flanneldValue(ip, mac string) string {
	return `{"PublicIP":"` + ip + `","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + mac + `"}}`
}

// TestLookupLease checks that LookupLease finds the key AcquireLease takes
// back (so that the lease a backend reads its identity from is the one the
// node then holds), changes nothing, and finds nothing where there is
// nothing to take back.
func TestLookupLease(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	cfg := mustConfig(t, cfg50)
	ctx := testCtx(t, 60*time.Second)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	leased := clientv3.WithLease(grant.ID)
	// Distinct public addresses per case; keys of one case do not match
	// another's address.
	for _, tc := range []struct {
		name string
		ip   string
		keys map[string]string // subnet -> value; a "R" prefix marks a reservation
		want string            // the subnet found, "" for none
	}{
		{name: "nothing held", ip: "192.168.1.1"},
		{name: "flanneld's leased key", ip: "192.168.1.2",
			keys: map[string]string{"10.5.2.0/24": flanneldValue("192.168.1.2", "7a:3b:19:0c:44:d1")}, want: "10.5.2.0/24"},
		{name: "a reservation", ip: "192.168.1.3",
			keys: map[string]string{"10.5.3.0/24": "R" + flanneldValue("192.168.1.3", "7a:3b:19:0c:44:d2")}, want: "10.5.3.0/24"},
		{name: "leased key before a reservation", ip: "192.168.1.4",
			keys: map[string]string{"10.5.4.0/24": "R" + flanneldValue("192.168.1.4", "7a:3b:19:0c:44:d3"),
				"10.5.5.0/24": flanneldValue("192.168.1.4", "7a:3b:19:0c:44:d4")}, want: "10.5.5.0/24"},
		{name: "another node's key", ip: "192.168.1.6",
			keys: map[string]string{"10.5.6.0/24": flanneldValue("192.168.1.66", "7a:3b:19:0c:44:d5")}},
		{name: "a key outside the network", ip: "192.168.1.7",
			keys: map[string]string{"10.6.7.0/24": flanneldValue("192.168.1.7", "7a:3b:19:0c:44:d6")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := map[netip.Prefix]string{}
			for sn, v := range tc.keys {
				p := netip.MustParsePrefix(sn)
				if v[0] == 'R' {
					put(t, cli, subnetKey(sn), v[1:])
					v = v[1:]
				} else {
					put(t, cli, subnetKey(sn), v, leased)
				}
				values[p] = v
			}
			rev := put(t, cli, "/unrelated", "x").Header.Revision
			s, _ := newTestStore(t, cli)
			ip := netip.MustParseAddr(tc.ip)
			l, err := s.LookupLease(ctx, cfg, ip)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if l != nil {
					t.Fatalf("LookupLease found %s (%+v), want none", l.Subnet, l.Attrs)
				}
				return
			}
			want := netip.MustParsePrefix(tc.want)
			if l == nil || l.Subnet != want {
				t.Fatalf("LookupLease = %+v, want subnet %s", l, want)
			}
			got, err := l.Attrs.Marshal()
			if err != nil || string(got) != values[want] {
				t.Errorf("attrs %s (%v), want %s", got, err, values[want])
			}
			if l.ModRevision == 0 || l.ModRevision > rev {
				t.Errorf("ModRevision %d, want that of the key (at most %d)", l.ModRevision, rev)
			}
			// Nothing was written.
			if resp, err := cli.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Header.Revision != rev {
				t.Errorf("revision moved from %d to %v (err %v): LookupLease wrote", rev, resp.Header.Revision, err)
			}
			// AcquireLease takes back the very key LookupLease found, and
			// with the same attributes leaves it as it is.
			a, err := s.AcquireLease(ctx, cfg, l.Attrs, subnet.AcquireOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if a.Subnet != l.Subnet {
				t.Errorf("AcquireLease took %s, LookupLease found %s", a.Subnet, l.Subnet)
			}
			resp, err := cli.Get(ctx, subnetKey(tc.want))
			if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != values[want] || resp.Kvs[0].ModRevision != l.ModRevision {
				t.Errorf("AcquireLease with the looked-up attributes changed the key: %v %v", resp, err)
			}
		})
	}
}
