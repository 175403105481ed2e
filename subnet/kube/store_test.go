package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/kubetest"
)

// logBuffer collects a store's logs for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many lines hold every one of subs.
func (l *logBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all && line != "" {
			n++
		}
	}
	return n
}

const (
	pfx    = "flannel.alpha.coreos.com/"
	macA   = "5a:1f:00:00:00:0a"
	macOwn = "5a:1f:00:00:00:01"
)

func vxlanAnnotations(ip, mac string) map[string]string {
	return map[string]string{
		pfx + "kube-subnet-manager": "true",
		pfx + "backend-type":        "vxlan",
		pfx + "backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac),
		pfx + "public-ip":           ip,
	}
}

// eventLog collects the batches WatchLeases delivers.
type eventLog struct {
	mu      sync.Mutex
	batches [][]subnet.Event
	gate    sync.Mutex // held to block delivery
	waiting atomic.Int32
}

func (e *eventLog) fn(b []subnet.Event) {
	e.waiting.Add(1)
	e.gate.Lock()
	e.waiting.Add(-1)
	e.gate.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batches = append(e.batches, b)
}

func (e *eventLog) all() []subnet.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []subnet.Event
	for _, b := range e.batches {
		out = append(out, b...)
	}
	return out
}

// waitFor waits until an event after index from matches.
func (e *eventLog) waitFor(t *testing.T, from int, what string, match func(subnet.Event) bool) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		evs := e.all()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return i + 1
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no event %s within 20s; events: %+v", what, e.all()[from:])
	return 0
}

func eventIs(typ subnet.EventType, sn string) func(subnet.Event) bool {
	return func(ev subnet.Event) bool { return ev.Type == typ && ev.Lease.Subnet.String() == sn }
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 20s: %v", what, err)
}

func patchNode(t *testing.T, c *kubetest.Cluster, name, body string, sub ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}, sub...); err != nil {
		t.Fatalf("patching node %s with %s: %v", name, body, err)
	}
}

func getNode(t *testing.T, c *kubetest.Cluster, name string) *corev1.Node {
	t.Helper()
	n, err := c.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStore drives the Kubernetes store against a real apiserver: it waits
// for the own podCIDR, writes and restores the own annotations, sets the
// NetworkUnavailable condition, and turns peer Nodes into validated lease
// events, logging bad ones once.
func TestStore(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	dir := t.TempDir()
	netConf := filepath.Join(dir, "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.CreateNode(t, "self", kubetest.NodeOptions{Images: 5})
	logs := &logBuffer{}
	api, err := NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{
		Client: api, NodeName: "self", NetConfPath: netConf, SetNodeNetworkUnavailable: true,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ValidatorFor: registry.ValidateData, LivenessInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// No podCIDR yet: GetNetworkConfig waits and says so once.
	cfgCh := make(chan *subnet.Config, 1)
	go func() {
		cfg, err := s.GetNetworkConfig(ctx)
		if err != nil {
			t.Errorf("GetNetworkConfig: %v", err)
		}
		cfgCh <- cfg
	}()
	eventually(t, "the wait is logged", func() error {
		if logs.count("has no podCIDR yet", "node=self") != 1 {
			return fmt.Errorf("log:\n%s", logs)
		}
		return nil
	})
	if logs.count("ignoring", "SubnetLen") != 1 {
		t.Errorf("the ignored SubnetLen is not reported once:\n%s", logs)
	}
	patchNode(t, c, "self", `{"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}`)
	var cfg *subnet.Config
	select {
	case cfg = <-cfgCh:
	case <-time.After(20 * time.Second):
		t.Fatal("GetNetworkConfig did not return once the podCIDR was set")
	}
	if cfg.SubnetLen != 24 || cfg.Network.String() != "10.244.0.0/16" || cfg.BackendType != "vxlan" {
		t.Fatalf("config %+v", cfg)
	}
	if n := logs.count("has no podCIDR yet"); n != 1 {
		t.Errorf("the wait was logged %d times", n)
	}

	// Peers: one good, one not a flannel node, three bad ones.
	c.CreateNode(t, "peer-a", kubetest.NodeOptions{PodCIDR: "10.244.2.0/24", Annotations: vxlanAnnotations("192.0.2.2", macA), Images: 3})
	c.CreateNode(t, "plain", kubetest.NodeOptions{PodCIDR: "10.244.3.0/24"})
	bad := vxlanAnnotations("192.0.2.4", macA)
	bad[pfx+"backend-data"] = `{"VNI":1,"VtepMAC":`
	c.CreateNode(t, "bad-json", kubetest.NodeOptions{PodCIDR: "10.244.4.0/24", Annotations: bad})
	c.CreateNode(t, "bad-ip", kubetest.NodeOptions{PodCIDR: "10.244.5.0/24", Annotations: vxlanAnnotations("192.0.2.500", macA)})
	c.CreateNode(t, "outside", kubetest.NodeOptions{PodCIDR: "10.99.0.0/24", Annotations: vxlanAnnotations("192.0.2.6", macA)})

	// The store has seen every node before the snapshot is taken.
	eventually(t, "the store sees the peers", func() error {
		if s.snapshot()["outside"] == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	ev := &eventLog{}
	watchDone := make(chan error, 1)
	go func() { watchDone <- s.WatchLeases(ctx, cfg, ev.fn) }()
	i := ev.waitFor(t, 0, "peer-a added", eventIs(subnet.EventAdded, "10.244.2.0/24"))
	if evs := ev.all(); len(evs) != 1 {
		t.Errorf("snapshot events %+v, want peer-a only", evs)
	} else if a := evs[0].Lease.Attrs; a.PublicIP.String() != "192.0.2.2" || a.BackendType != "vxlan" || !strings.Contains(string(a.BackendData), macA) {
		t.Errorf("peer-a lease attrs %+v", a)
	}
	for _, want := range [][]string{
		{"node=bad-json", "not valid JSON"},
		{"node=bad-ip", "192.0.2.500", "not an IPv4 address"},
		{"node=outside", "10.99.0.0/24"},
	} {
		if n := logs.count(want...); n != 1 {
			t.Errorf("%d log lines with %q, want 1:\n%s", n, want, logs)
		}
	}
	if logs.count("level=WARN", "node=plain") != 0 {
		t.Errorf("a node without flannel annotations is warned about:\n%s", logs)
	}

	// The store keeps only what leases need.
	if kept := s.snapshot()["peer-a"]; len(kept.annotations) != 4 || len(kept.podCIDRs) != 1 || kept.podCIDRs[0] != "10.244.2.0/24" || kept.netUnavailable != "" {
		t.Errorf("the store keeps %+v of peer-a", kept)
	}

	// Nothing to look up before the node has advertised a lease.
	if l, err := s.LookupLease(ctx, cfg, netip.Addr{}); l != nil || err != nil {
		t.Errorf("LookupLease before any lease = %+v, %v", l, err)
	}
	// Acquire: the own annotations are written on nodes/self/status.
	mac := json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, macOwn))
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "vxlan", BackendData: mac}
	lease, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Subnet.String() != "10.244.1.0/24" || !lease.Attrs.Equal(attrs) {
		t.Fatalf("lease %+v", lease)
	}
	want := vxlanAnnotations("192.0.2.1", macOwn)
	own := getNode(t, c, "self")
	for k, v := range want {
		if own.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, own.Annotations[k], v)
		}
	}
	// LookupLease reads the store's copy, which follows the patch.
	eventually(t, "LookupLease finds the lease", func() error {
		if got, err := s.LookupLease(ctx, cfg, netip.Addr{}); err != nil || got == nil || !got.Attrs.Equal(attrs) || got.Subnet.String() != "10.244.1.0/24" {
			return fmt.Errorf("LookupLease = %+v, %v; want %+v", got, err, attrs)
		}
		return nil
	})

	// Keep: NetworkUnavailable=False sticks, hand edits are undone.
	go func() {
		_ = s.KeepLease(ctx, cfg, lease, time.Hour, func(*subnet.Lease) { t.Error("the own lease changed") })
	}()
	eventually(t, "NetworkUnavailable=False", func() error {
		for _, cnd := range getNode(t, c, "self").Status.Conditions {
			if cnd.Type == corev1.NodeNetworkUnavailable && cnd.Status == corev1.ConditionFalse && cnd.Reason == "FlannelIsUp" &&
				cnd.Message == "Flannel is running on this node" {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", getNode(t, c, "self").Status.Conditions)
	})
	patchNode(t, c, "self", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:99\"}"}}}`)
	eventually(t, "own backend-data restored", func() error {
		if got := getNode(t, c, "self").Annotations[pfx+"backend-data"]; got != string(mac) {
			return fmt.Errorf("backend-data %s", got)
		}
		return nil
	})
	patchNode(t, c, "self", `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated"}]}}`, "status")
	eventually(t, "NetworkUnavailable=False again", func() error {
		for _, cnd := range getNode(t, c, "self").Status.Conditions {
			if cnd.Type == corev1.NodeNetworkUnavailable && cnd.Status == corev1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})

	// Peer changes.
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.22"}}}`)
	i = ev.waitFor(t, i, "peer-a changed", func(e subnet.Event) bool {
		return e.Type == subnet.EventChanged && e.Lease.Attrs.PublicIP.String() == "192.0.2.22"
	})
	// A bad MAC on the good peer: logged once, the peer is removed (its
	// lease is no longer usable), the other peers are untouched.
	c.CreateNode(t, "peer-b", kubetest.NodeOptions{PodCIDR: "10.244.6.0/24", Annotations: vxlanAnnotations("192.0.2.7", "5a:1f:00:00:00:0b")})
	i = ev.waitFor(t, i, "peer-b added", eventIs(subnet.EventAdded, "10.244.6.0/24"))
	patchNode(t, c, "peer-b", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"zz:zz\"}"}}}`)
	i = ev.waitFor(t, i, "peer-b removed", eventIs(subnet.EventRemoved, "10.244.6.0/24"))
	if n := logs.count("node=peer-b", "VtepMAC"); n != 1 {
		t.Errorf("bad MAC logged %d times:\n%s", n, logs)
	}
	// A backend-type change removes the peer; changing back adds it.
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-type":"host-gw"}}}`)
	i = ev.waitFor(t, i, "peer-a removed (backend changed)", eventIs(subnet.EventRemoved, "10.244.2.0/24"))
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-type":"vxlan"}}}`)
	i = ev.waitFor(t, i, "peer-a added back", eventIs(subnet.EventAdded, "10.244.2.0/24"))
	// No longer a flannel node: removed.
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/kube-subnet-manager":null}}}`)
	i = ev.waitFor(t, i, "peer-a removed (not flannel)", eventIs(subnet.EventRemoved, "10.244.2.0/24"))
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/kube-subnet-manager":"true"}}}`)
	i = ev.waitFor(t, i, "peer-a added again", eventIs(subnet.EventAdded, "10.244.2.0/24"))
	// A fixed bad node becomes a peer.
	patchNode(t, c, "bad-ip", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.5"}}}`)
	i = ev.waitFor(t, i, "bad-ip fixed", eventIs(subnet.EventAdded, "10.244.5.0/24"))

	// A burst while the consumer is blocked folds into the latest state.
	ev.gate.Lock()
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.30"}}}`)
	eventually(t, "the first change of the burst waits at the gate", func() error {
		if ev.waiting.Load() != 1 {
			return fmt.Errorf("no batch waiting")
		}
		return nil
	})
	for k := 31; k < 80; k++ {
		patchNode(t, c, "peer-a", fmt.Sprintf(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.%d"}}}`, k))
	}
	eventually(t, "the store has the burst", func() error {
		if ip := s.snapshot()["peer-a"].annotations[pfx+"public-ip"]; ip != "192.0.2.79" {
			return fmt.Errorf("public-ip %s", ip)
		}
		return nil
	})
	ev.gate.Unlock()
	last := ev.waitFor(t, i, "peer-a at the end of the burst", func(e subnet.Event) bool {
		return e.Type == subnet.EventChanged && e.Lease.Attrs.PublicIP.String() == "192.0.2.79"
	})
	if n := last - i; n > 3 {
		t.Errorf("a burst of 50 changes to one node while the consumer was blocked became %d events, want at most 3", n)
	}
	i = last

	// Deleted: removed.
	c.DeleteNode(t, "peer-a")
	ev.waitFor(t, i, "peer-a removed (deleted)", eventIs(subnet.EventRemoved, "10.244.2.0/24"))

	cancel()
	if err := <-watchDone; err != context.Canceled {
		t.Errorf("WatchLeases returned %v", err)
	}
}

// TestNetConfErrors: a missing or malformed net-conf.json is an error
// naming the file.
func TestNetConfErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"missing.json", "", "no such file"},
		{"bad.json", `{"Network":`, "bad.json"},
		{"v6.json", `{"Network":"10.244.0.0/16","IPv6Network":"10.0.0.0/8"}`, "not an IPv6 CIDR"},
		{"nonet.json", `{"Backend":{"Type":"vxlan"}}`, "Network is missing"},
	} {
		p := filepath.Join(dir, tc.name)
		if tc.content != "" {
			if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, err := ReadNetConf(p, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: err %v, want one naming the file and %q", tc.name, err, tc.want)
		}
	}
}

// TestOwnNodeRegisteredAgain deletes this node's Node under a running
// KeepLease and registers it again with another podCIDR, as a kubelet
// would after the Node was deleted: the store reports the new lease and
// writes the annotations and the condition again.
func TestOwnNodeRegisteredAgain(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.CreateNode(t, "self", kubetest.NodeOptions{PodCIDR: "10.244.1.0/24"})
	api, err := NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	s, err := New(Options{Client: api, NodeName: "self", NetConfPath: netConf, SetNodeNetworkUnavailable: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), ValidatorFor: registry.ValidateData})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"}
	lease, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan subnet.Lease, 4)
	go func() { _ = s.KeepLease(ctx, cfg, lease, time.Hour, func(l *subnet.Lease) { changed <- *l }) }()
	eventually(t, "condition set", func() error {
		for _, cnd := range getNode(t, c, "self").Status.Conditions {
			if cnd.Type == corev1.NodeNetworkUnavailable && cnd.Status == corev1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})

	c.DeleteNode(t, "self")
	c.CreateNode(t, "self", kubetest.NodeOptions{PodCIDR: "10.244.9.0/24"})
	select {
	case l := <-changed:
		if l.Subnet.String() != "10.244.9.0/24" || !l.Attrs.Equal(attrs) {
			t.Errorf("new lease %+v", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no new lease after the Node came back with another podCIDR; log:\n%s", logs)
	}
	eventually(t, "annotations and condition written again", func() error {
		n := getNode(t, c, "self")
		if n.Annotations[pfx+"kube-subnet-manager"] != "true" || n.Annotations[pfx+"public-ip"] != "192.0.2.1" || n.Annotations[pfx+"backend-type"] != "host-gw" {
			return fmt.Errorf("annotations %v", n.Annotations)
		}
		for _, cnd := range n.Status.Conditions {
			if cnd.Type == corev1.NodeNetworkUnavailable && cnd.Status == corev1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", n.Status.Conditions)
	})
}
