package doctor

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/test/kubetest"
)

// TestKubeStore runs the store and peer-lease checks in Kubernetes mode
// against a real apiserver: a healthy Node, one without podCIDR, one with
// a podCIDR outside the network, one weftd never annotated, malformed
// annotations on the own Node and on a peer, a missing Node, and an
// apiserver that does not answer. Each gives its verdict, cause and exit
// code (the checks' share of it: 0 healthy, 1 a problem, 2 could not look).
func TestKubeStore(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := kube.DefaultAnnotationPrefix + "/"
	ann := func(ip, mac string) map[string]string {
		return map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`, p + "public-ip": ip}
	}
	c.CreateNode(t, "good", kubetest.NodeOptions{PodCIDR: "10.244.1.0/24", Annotations: ann("192.0.2.1", "5a:1f:00:00:00:01")})
	c.CreateNode(t, "peer", kubetest.NodeOptions{PodCIDR: "10.244.2.0/24", Annotations: ann("192.0.2.2", "5a:1f:00:00:00:02")})
	c.CreateNode(t, "plain", kubetest.NodeOptions{PodCIDR: "10.244.3.0/24"}) // not a flannel node
	c.CreateNode(t, "nocidr", kubetest.NodeOptions{})
	c.CreateNode(t, "outside", kubetest.NodeOptions{PodCIDR: "10.99.0.0/24"})
	api, err := kube.NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	store := func(node string) KubeStore {
		return KubeStore{API: api, Host: c.URL, Annotations: a, NetConfPath: netConf, Validate: registry.ValidateData,
			Getenv: func(k string) string {
				if k == "NODE_NAME" {
					return node
				}
				return ""
			}}
	}
	// check runs the store and peer-lease checks as Run does.
	check := func(t *testing.T, s Store) (store, leases Result, code int) {
		t.Helper()
		n := &node{o: Options{Store: s, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"),
			Iface: agent.IfaceOptions{PublicIP: netip.MustParseAddr("192.0.2.1")}}}
		res := n.checkStore(context.Background())
		leases = n.checkLeases()
		rep := &Report{Results: []Result{res[0], leases}}
		return res[0], leases, rep.ExitCode()
	}

	t.Run("healthy", func(t *testing.T) {
		s, l, code := check(t, store("good"))
		if code != 0 || s.Status != OK || l.Status != OK {
			t.Fatalf("exit %d:\n%+v\n%+v", code, s, l)
		}
		for _, want := range []string{"Kubernetes API " + c.URL, "Node good", "network 10.244.0.0/16", "2 valid leases, 0 invalid"} {
			if !strings.Contains(s.Verdict, want) {
				t.Errorf("store verdict %q lacks %q", s.Verdict, want)
			}
		}
		// The own lease is the Node's (found by name), with the podCIDR's
		// length, not net-conf.json's ignored SubnetLen.
		n := &node{o: Options{Store: store("good"), Iface: agent.IfaceOptions{PublicIP: netip.MustParseAddr("192.0.2.1")}}}
		n.checkStore(context.Background())
		if n.own == nil || n.own.Subnet != netip.MustParsePrefix("10.244.1.0/24") || n.cfg.SubnetLen != 24 {
			t.Errorf("own lease %+v, config %+v", n.own, n.cfg)
		}
	})

	for _, tc := range []struct {
		name, node    string
		status        Status
		code          int
		verdict, fix  string
		cause         string
		leasesProblem bool
	}{
		{name: "no podCIDR", node: "nocidr", status: Problem, code: 1, verdict: "Node nocidr has no podCIDR",
			cause: "--allocate-node-cidrs=true", fix: "--cluster-cidr=10.244.0.0/16"},
		{name: "podCIDR outside the network", node: "outside", status: Problem, code: 1,
			verdict: "podCIDR 10.99.0.0/24 is not inside Network 10.244.0.0/16", cause: "--cluster-cidr", fix: "restart weftd"},
		{name: "not annotated", node: "plain", status: Problem, code: 1,
			verdict: "Node plain has no flannel.alpha.coreos.com/kube-subnet-manager=true annotation", cause: "weftd annotates its Node", fix: "start weftd -kube-subnet-mgr"},
		{name: "no such Node", node: "ghost", status: Problem, code: 1, verdict: "Node ghost does not exist", cause: "NODE_NAME", fix: "kubectl get nodes"},
		{name: "no node name", node: "", status: Unknown, code: 2, verdict: "cannot tell which Node this node is", cause: "NODE_NAME", fix: "NODE_NAME="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, code := check(t, store(tc.node))
			var b strings.Builder
			_ = RenderText(&b, &Report{Node: tc.node, Results: []Result{s}})
			t.Logf("the store check:\n%s", b.String())
			if code != tc.code || s.Status != tc.status || !strings.Contains(s.Verdict, tc.verdict) ||
				!strings.Contains(s.Cause, tc.cause) || !strings.Contains(strings.Join(s.Fix, "\n"), tc.fix) {
				t.Errorf("exit %d, %s %q\ncause %q\nfix %q\nwant exit %d, %s %q, cause with %q, fix with %q",
					code, s.Status, s.Verdict, s.Cause, s.Fix, tc.code, tc.status, tc.verdict, tc.cause, tc.fix)
			}
		})
	}

	t.Run("malformed annotations", func(t *testing.T) {
		bad := ann("not-an-ip", "5a:1f:00:00:00:05")
		c.CreateNode(t, "badann", kubetest.NodeOptions{PodCIDR: "10.244.5.0/24", Annotations: bad})
		// On the node itself: the store check.
		s, _, code := check(t, store("badann"))
		if code != 1 || s.Status != Problem || !strings.Contains(s.Verdict, `public-ip="not-an-ip" is not an IPv4 address`) ||
			!strings.Contains(s.Cause, "peers skip") || !strings.Contains(strings.Join(s.Fix, "\n"), "restart weftd") {
			t.Errorf("own: exit %d, %+v", code, s)
		}
		// On a peer: the peer-lease check names the Node, with fixes for
		// Kubernetes mode (no `weft leases release` there).
		s, l, code := check(t, store("good"))
		fix := strings.Join(l.Fix, "\n")
		if code != 1 || s.Status != OK || !strings.Contains(s.Verdict, "1 invalid") || l.Status != Problem ||
			!strings.Contains(l.Verdict, "invalid lease node/badann") || !strings.Contains(l.Verdict, "not-an-ip") ||
			!strings.Contains(fix, "weft leases -kube-subnet-mgr") || strings.Contains(fix, "leases release") {
			t.Errorf("peer: exit %d\n%+v\n%+v", code, s, l)
		}
		c.DeleteNode(t, "badann")
	})

	t.Run("node-public-ip", func(t *testing.T) {
		// An operator's node-public-ip wins over -public-ip, as in weftd.
		pa := ann("192.0.2.6", "5a:1f:00:00:00:06")
		pa[p+"node-public-ip"] = "192.0.2.6"
		c.CreateNode(t, "pub", kubetest.NodeOptions{PodCIDR: "10.244.6.0/24", Annotations: pa})
		defer c.DeleteNode(t, "pub")
		snap := store("pub").Look(context.Background())
		if snap.Fail != nil || snap.PublicIP != netip.MustParseAddr("192.0.2.6") || snap.PublicIPv6.IsValid() {
			t.Errorf("snapshot: fail %+v, public IPs %v %v", snap.Fail, snap.PublicIP, snap.PublicIPv6)
		}
		n := &node{o: Options{Store: store("pub"), Iface: agent.IfaceOptions{PublicIP: netip.MustParseAddr("192.0.2.1")}}}
		n.checkStore(context.Background())
		if n.o.Iface.PublicIP != netip.MustParseAddr("192.0.2.6") {
			t.Errorf("the doctor chooses the interface with -public-ip %v, want the annotation's", n.o.Iface.PublicIP)
		}
	})

	t.Run("apiserver unreachable", func(t *testing.T) {
		rc, err := kube.RESTConfig("https://127.0.0.1:1", "", "test")
		if err != nil {
			t.Fatal(err)
		}
		down, err := kube.NewAPI(rc)
		if err != nil {
			t.Fatal(err)
		}
		ks := store("good")
		ks.API, ks.Host = down, rc.Host
		s, l, code := check(t, ks)
		if code != 2 || s.Status != Unknown || !strings.Contains(s.Verdict, "cannot read the Nodes from the Kubernetes API at https://127.0.0.1:1") ||
			!strings.Contains(s.Cause, "connection refused") || !strings.Contains(strings.Join(s.Fix, "\n"), "-kubeconfig-file") || l.Status != Unknown {
			t.Errorf("exit %d\n%+v\n%+v", code, s, l)
		}
		// No client at all (a kubeconfig that cannot be read).
		ks.API, ks.APIErr = nil, os.ErrNotExist
		if s, _, code := check(t, ks); code != 2 || s.Status != Unknown || !strings.Contains(s.Verdict, "no client for the Kubernetes API") {
			t.Errorf("no client: exit %d, %+v", code, s)
		}
	})

	t.Run("net-conf.json", func(t *testing.T) {
		ks := store("good")
		ks.NetConfPath = filepath.Join(t.TempDir(), "missing.json")
		if s, _, code := check(t, ks); code != 2 || s.Status != Unknown || !strings.Contains(strings.Join(s.Fix, "\n"), "-net-config-path") {
			t.Errorf("missing: exit %d, %+v", code, s)
		}
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		ks.NetConfPath = bad
		if s, _, code := check(t, ks); code != 1 || s.Status != Problem || !strings.Contains(s.Verdict, "is invalid") {
			t.Errorf("malformed: exit %d, %+v", code, s)
		}
	})
}
