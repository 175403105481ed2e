package teardown

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/etcdtest"
	"github.com/weftnet/weft/test/kubetest"
	"github.com/weftnet/weft/test/netnstest"
)

const network = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// fixture is an etcd with a config, a lease store over it and a namespace
// holding what weftd leaves on a vxlan node.
type fixture struct {
	cli   *clientv3.Client
	store *etcd.Store
	ns    *netnstest.NS
	cfg   *subnet.Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	srv := etcdtest.Start(t)
	f := &fixture{cli: srv.Client(), store: etcd.NewWithClient(srv.Client(), etcd.Options{})}
	if _, err := f.cli.Put(context.Background(), etcd.DefaultPrefix+"/config", network); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := subnet.ParseConfig([]byte(network))
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	f.ns = netnstest.NewNS(t, "td")
	netnstest.NewVeth(t, f.ns, "eth0", netip.MustParsePrefix("192.0.2.10/24"), netnstest.NewNS(t, "tdpeer"), "p0", netip.Prefix{})
	return f
}

// acquire leases a subnet for ip.
func (f *fixture) acquire(t *testing.T, ip string) *subnet.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)}
	l, err := f.store.AcquireLease(ctx, f.cfg, attrs, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run tears down inside the fixture's namespace.
func (f *fixture) run(t *testing.T, o Options) (*Report, error) {
	t.Helper()
	var rep *Report
	var err error
	if derr := f.ns.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rep, err = Run(ctx, o)
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	return rep, err
}

func (f *fixture) hasKey(t *testing.T, l *subnet.Lease) bool {
	t.Helper()
	r, err := f.cli.Get(context.Background(), etcd.DefaultPrefix+"/subnets/"+l.Key())
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Kvs) == 1
}

// TestRun decommissions a vxlan node: the lease goes through the store,
// the device and the gateway routes inside the network go, subnet.env goes;
// routes outside the network stay. A second run has nothing left to do.
func TestRun(t *testing.T) {
	f := newFixture(t)
	own := f.acquire(t, "192.0.2.10")
	other := f.acquire(t, "192.0.2.12")
	env := filepath.Join(t.TempDir(), "subnet.env")
	first := own.Subnet.Addr().Next()
	if err := subnetenv.Write(env, &subnetenv.Env{Networks: []netip.Prefix{f.cfg.Network}, Subnet: netip.PrefixFrom(first, own.Subnet.Bits()), MTU: 1450, IPMasq: true}); err != nil {
		t.Fatal(err)
	}
	f.ns.MustExec(t, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "dstport", "8472")
	f.ns.MustExec(t, "ip", "route", "add", other.Subnet.String(), "via", "192.0.2.12", "dev", "eth0")
	f.ns.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.13", "dev", "eth0")

	rep, err := f.run(t, Options{Leases: f.store, SubnetFile: env, PublicIP: netip.MustParseAddr("192.0.2.10")})
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	want := Report{Released: []string{own.Subnet.String()}, Links: []string{"flannel.1"}, Routes: []string{other.Subnet.String()}, IPTables: true, NFTables: true, EnvFile: true}
	if !reflect.DeepEqual(*rep, want) {
		t.Errorf("report %+v, want %+v", *rep, want)
	}
	if f.hasKey(t, own) {
		t.Errorf("lease %s still in etcd", own.Key())
	}
	if !f.hasKey(t, other) {
		t.Errorf("another node's lease %s was removed", other.Key())
	}
	if out := f.ns.MustExec(t, "ip", "-o", "link", "show"); strings.Contains(out, "flannel.1") {
		t.Errorf("flannel.1 still there:\n%s", out)
	}
	routes := f.ns.MustExec(t, "ip", "route", "show")
	if strings.Contains(routes, other.Subnet.String()) || !strings.Contains(routes, "198.51.100.0/24 via 192.0.2.13") {
		t.Errorf("routes after teardown:\n%s", routes)
	}
	if _, err := os.Stat(env); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("subnet.env: %v, want it gone", err)
	}

	rep, err = f.run(t, Options{Leases: f.store, SubnetFile: env, Subnet: own.Subnet})
	if err != nil || len(rep.Released)+len(rep.Links)+len(rep.Routes) != 0 || rep.EnvFile {
		t.Errorf("second teardown: %+v, %v; want nothing done and no error", rep, err)
	}
}

// TestRunKeepsOthers: a lease now advertising another address and an
// operator's reservation are kept, with an error saying why.
func TestRunKeepsOthers(t *testing.T) {
	f := newFixture(t)
	moved := f.acquire(t, "192.0.2.20")
	res := netip.MustParsePrefix("10.244.250.0/24")
	if _, err := f.store.Reserve(context.Background(), res, netip.MustParseAddr("192.0.2.21")); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "subnet.env")
	for _, tc := range []struct {
		name string
		o    Options
		key  string
		want string
	}{
		{"another address", Options{Subnet: moved.Subnet, PublicIP: netip.MustParseAddr("192.0.2.10")}, moved.Key(), "belongs to 192.0.2.20, not 192.0.2.10"},
		{"reservation", Options{Subnet: res}, subnet.SubnetKey(res, netip.Prefix{}), "is a reservation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Leases, tc.o.SubnetFile, tc.o.KeepIPTables = f.store, missing, true
			rep, err := f.run(t, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("teardown: %v, want an error containing %q", err, tc.want)
			}
			if rep == nil || len(rep.Released) != 0 {
				t.Errorf("report %+v, want nothing released", rep)
			}
			r, err := f.cli.Get(context.Background(), etcd.DefaultPrefix+"/subnets/"+tc.key)
			if err != nil || len(r.Kvs) != 1 {
				t.Errorf("key %s: %v, %v; want it kept", tc.key, r, err)
			}
		})
	}
}

// TestRunKube decommissions a Kubernetes-mode vxlan node whose subnet.env
// is gone: the device and the gateway routes inside net-conf.json's
// network go, the Node's lease annotations go (peers drop it) while its
// podCIDR and the annotations a person set stay, and another Node is not
// touched.
func TestRunKube(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	p := kube.DefaultAnnotationPrefix + "/"
	ann := func(ip string) map[string]string {
		return map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": `{"VNI":1,"VtepMAC":"5a:1f:00:00:00:01"}`, p + "public-ip": ip}
	}
	own := ann("192.0.2.10")
	own[p+"public-ip-overwrite"] = "198.51.100.10" // a person's
	c.CreateNode(t, "td-own", kubetest.NodeOptions{PodCIDR: "10.244.7.0/24", Annotations: own})
	c.CreateNode(t, "td-peer", kubetest.NodeOptions{PodCIDR: "10.244.8.0/24", Annotations: ann("192.0.2.12")})
	api, err := kube.NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)

	ns := netnstest.NewNS(t, "tdk")
	netnstest.NewVeth(t, ns, "eth0", netip.MustParsePrefix("192.0.2.10/24"), netnstest.NewNS(t, "tdkpeer"), "p0", netip.Prefix{})
	ns.MustExec(t, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "dstport", "8472")
	ns.MustExec(t, "ip", "route", "add", "10.244.8.0/24", "via", "192.0.2.12", "dev", "eth0")
	ns.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.13", "dev", "eth0")
	f := &fixture{ns: ns}

	o := Options{Node: KubeNode{API: api, Annotations: a, NodeName: "td-own"},
		Networks:   []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}
	rep, err := f.run(t, o)
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	want := Report{Node: "td-own", PodCIDRs: []string{"10.244.7.0/24"}, Links: []string{"flannel.1"}, Routes: []string{"10.244.8.0/24"}, IPTables: true, NFTables: true}
	if !reflect.DeepEqual(*rep, want) {
		t.Errorf("report %+v, want %+v", *rep, want)
	}
	if out := ns.MustExec(t, "ip", "-o", "link", "show"); strings.Contains(out, "flannel.1") {
		t.Errorf("flannel.1 still there:\n%s", out)
	}
	if routes := ns.MustExec(t, "ip", "route", "show"); strings.Contains(routes, "10.244.8.0/24") || !strings.Contains(routes, "198.51.100.0/24 via 192.0.2.13") {
		t.Errorf("routes after teardown:\n%s", routes)
	}
	ctx := context.Background()
	n, err := c.Client.CoreV1().Nodes().Get(ctx, "td-own", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range ann("") {
		if _, ok := n.Annotations[k]; ok {
			t.Errorf("Node td-own still has %s", k)
		}
	}
	if n.Annotations[p+"public-ip-overwrite"] != "198.51.100.10" || n.Spec.PodCIDR != "10.244.7.0/24" {
		t.Errorf("Node td-own lost its podCIDR or a person's annotation: %q, %v", n.Spec.PodCIDR, n.Annotations)
	}
	peer, err := c.Client.CoreV1().Nodes().Get(ctx, "td-peer", metav1.GetOptions{})
	if err != nil || peer.Annotations[p+"kube-subnet-manager"] != "true" {
		t.Errorf("Node td-peer: %v, %v", err, peer.Annotations)
	}

	// With the apiserver gone the local objects still go, and the error
	// says what was not done.
	ns.MustExec(t, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "dstport", "8472")
	c.StopAPIServer()
	o.Firewalls = map[firewall.Mode]firewall.Firewall{}
	rep, err = f.run(t, o)
	if err == nil || !strings.Contains(err.Error(), `removing the lease annotations of node "td-own"`) || rep.Node != "" ||
		!reflect.DeepEqual(rep.Links, []string{"flannel.1"}) {
		t.Errorf("teardown without an apiserver: %+v, %v", rep, err)
	}
}
