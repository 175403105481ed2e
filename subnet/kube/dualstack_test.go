package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/kubetest"
)

const macOwn6 = "5a:1f:00:00:01:01"

// dualAnnotations are a dual-stack vxlan node's annotations as flanneld
// (v0.26, pkg/subnet/kube/kube.go: AcquireLease) writes them.
func dualAnnotations(ip, ip6, mac, mac6 string) map[string]string {
	m := vxlanAnnotations(ip, mac)
	m[pfx+"backend-v6-data"] = fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac6)
	m[pfx+"public-ipv6"] = ip6
	return m
}

// TestStoreDualStack drives the store in a dual-stack network against a
// real apiserver: the own lease takes both podCIDRs, the own annotations
// include backend-v6-data and public-ipv6 (or public-ipv6-overwrite), a
// peer's IPv6-only change is delivered, and a peer without an IPv6 part is
// used for IPv4 only, logged once.
func TestStoreDualStack(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The v6 CIDR first: the store sorts by family, as flanneld.
	c.CreateNode(t, "self", kubetest.NodeOptions{PodCIDR: "fd00:10:244:1::/64", PodCIDRs: []string{"fd00:10:244:1::/64", "10.244.1.0/24"},
		Annotations: map[string]string{pfx + "public-ipv6-overwrite": "2001:db8::99"}})
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.EnableIPv4 || !cfg.EnableIPv6 || cfg.SubnetLen != 24 || cfg.IPv6SubnetLen != 64 || cfg.IPv6Network.String() != "fd00:10:244::/56" {
		t.Fatalf("config %+v", cfg)
	}

	// Own lease: both families; annotations with the v6 pair, the v6
	// public address replaced by the overwrite.
	mac := json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, macOwn))
	mac6 := json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, macOwn6))
	ip6 := netip.MustParseAddr("2001:db8::1")
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: &ip6, BackendType: "vxlan", BackendData: mac, BackendV6Data: mac6}
	lease, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Subnet.String() != "10.244.1.0/24" || lease.IPv6Subnet.String() != "fd00:10:244:1::/64" || !lease.Attrs.Equal(attrs) {
		t.Fatalf("lease %+v", lease)
	}
	own := getNode(t, c, "self")
	for k, v := range dualAnnotations("192.0.2.1", "2001:db8::99", macOwn, macOwn6) {
		if own.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, own.Annotations[k], v)
		}
	}

	// Peers: a dual-stack one, and a v4-only flannel node (as a node not
	// yet restarted with IPv6 on) that is used for IPv4.
	c.CreateNode(t, "peer-a", kubetest.NodeOptions{PodCIDR: "10.244.2.0/24", PodCIDRs: []string{"10.244.2.0/24", "fd00:10:244:2::/64"},
		Annotations: dualAnnotations("192.0.2.2", "2001:db8::2", macA, "5a:1f:00:00:01:0a")})
	c.CreateNode(t, "old-v4", kubetest.NodeOptions{PodCIDR: "10.244.3.0/24", Annotations: vxlanAnnotations("192.0.2.3", "5a:1f:00:00:00:0c")})
	eventually(t, "the store sees the peers", func() error {
		if s.snapshot()["old-v4"] == nil || s.snapshot()["peer-a"] == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	ev := &eventLog{}
	go func() { _ = s.WatchLeases(ctx, cfg, ev.fn) }()
	i := ev.waitFor(t, 0, "peer-a added", func(e subnet.Event) bool {
		return e.Type == subnet.EventAdded && e.Lease.Subnet.String() == "10.244.2.0/24" && e.Lease.IPv6Subnet.String() == "fd00:10:244:2::/64" &&
			e.Lease.Attrs.IPv6().String() == "2001:db8::2" && strings.Contains(string(e.Lease.Attrs.BackendV6Data), "5a:1f:00:00:01:0a")
	})
	ev.waitFor(t, 0, "old-v4 added for IPv4 only", func(e subnet.Event) bool {
		return e.Type == subnet.EventAdded && e.Lease.Subnet.String() == "10.244.3.0/24" && !e.Lease.IPv6Subnet.IsValid() && !e.Lease.Attrs.IPv6().IsValid()
	})
	if n := logs.count("using node for IPv4 only", "node=old-v4", "no IPv6 podCIDR"); n != 1 {
		t.Errorf("the v4-only peer logged %d times, want 1:\n%s", n, logs)
	}
	if n := logs.count("node=peer-a", "level=WARN"); n != 0 {
		t.Errorf("the dual-stack peer is warned about:\n%s", logs)
	}

	// An update that changes the IPv6 family only is delivered (flanneld
	// compares the v6 annotations too; a podCIDR-only check would drop it).
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ipv6":"2001:db8::22"}}}`)
	i = ev.waitFor(t, i, "peer-a v6 changed", func(e subnet.Event) bool {
		return e.Type == subnet.EventChanged && e.Lease.Attrs.IPv6().String() == "2001:db8::22" && e.Lease.Attrs.PublicIP.String() == "192.0.2.2"
	})
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-v6-data":"{\"VNI\":1,\"VtepMAC\":\"5a:1f:00:00:01:1a\"}"}}}`)
	i = ev.waitFor(t, i, "peer-a v6 MAC changed", func(e subnet.Event) bool {
		return e.Type == subnet.EventChanged && strings.Contains(string(e.Lease.Attrs.BackendV6Data), "5a:1f:00:00:01:1a")
	})

	// A bad v6 MAC: the peer keeps IPv4 (a changed lease without v6),
	// logged once; fixed, the v6 part comes back.
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-v6-data":"{\"VNI\":1,\"VtepMAC\":\"zz\"}"}}}`)
	i = ev.waitFor(t, i, "peer-a v4 only", func(e subnet.Event) bool {
		return e.Type == subnet.EventRemoved && e.Lease.IPv6Subnet.String() == "fd00:10:244:2::/64"
	})
	i = ev.waitFor(t, i, "peer-a re-added v4 only", func(e subnet.Event) bool {
		return e.Type == subnet.EventAdded && e.Lease.Subnet.String() == "10.244.2.0/24" && !e.Lease.IPv6Subnet.IsValid()
	})
	if n := logs.count("using node for IPv4 only", "node=peer-a", "VtepMAC"); n != 1 {
		t.Errorf("the bad v6 MAC logged %d times, want 1:\n%s", n, logs)
	}
	patchNode(t, c, "peer-a", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-v6-data":"{\"VNI\":1,\"VtepMAC\":\"5a:1f:00:00:01:2a\"}"}}}`)
	ev.waitFor(t, i, "peer-a dual-stack again", func(e subnet.Event) bool {
		return e.Type == subnet.EventAdded && e.Lease.IPv6Subnet.String() == "fd00:10:244:2::/64" && strings.Contains(string(e.Lease.Attrs.BackendV6Data), "5a:1f:00:00:01:2a")
	})
	eventually(t, "usable-again logged", func() error {
		if logs.count("IPv6 part is usable again", "node=peer-a") != 1 {
			return fmt.Errorf("log:\n%s", logs)
		}
		return nil
	})
}

// TestDualStackOwnNodeWithoutIPv6 checks that a dual-stack network and a
// node with an IPv4 podCIDR only is a clear error naming the node, not a
// lease without IPv6 that the backend trips over later (as flanneld).
func TestDualStackOwnNodeWithoutIPv6(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.CreateNode(t, "v4only", kubetest.NodeOptions{PodCIDR: "10.244.1.0/24"})
	c.CreateNode(t, "outside", kubetest.NodeOptions{PodCIDR: "10.244.2.0/24", PodCIDRs: []string{"10.244.2.0/24", "fd00:99::/64"}})
	api, err := NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string]string{"v4only": "no IPv6 podCIDR", "outside": "fd00:99::/64"} {
		s, err := New(Options{Client: api, NodeName: node, NetConfPath: netConf, Logger: slog.New(slog.DiscardHandler), ValidatorFor: registry.ValidateData})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err = s.GetNetworkConfig(ctx)
		cancel()
		s.Close()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), node) {
			t.Errorf("node %s: GetNetworkConfig error %v, want %q and the node's name", node, err, want)
		}
	}
}

// TestDualStackControllerManager has a real kube-controller-manager,
// run dual-stack as a cluster administrator would, allocate the node's
// podCIDRs (in its own order) and checks the store's lease takes one of
// each family.
func TestDualStackControllerManager(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), NodeCIDRMaskSize: 24,
		IPv6ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"), IPv6NodeCIDRMaskSize: 64,
	})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.CreateNode(t, "self", kubetest.NodeOptions{InternalIP: netip.MustParseAddr("192.0.2.1")})
	got := c.WaitPodCIDR(t, "self", time.Minute)
	if len(got) != 2 {
		t.Fatalf("the controller manager allocated %v, want one podCIDR of each family", got)
	}
	api, err := NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Client: api, NodeName: "self", NetConfPath: netConf, Logger: slog.New(slog.DiscardHandler), ValidatorFor: registry.ValidateData})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ip6 := netip.MustParseAddr("2001:db8::1")
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: &ip6, BackendType: "host-gw"}
	l, err := s.AcquireLease(ctx, cfg, attrs, subnet.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		if p != l.Subnet && p != l.IPv6Subnet {
			t.Errorf("lease %s + %s does not hold the allocated %s", l.Subnet, l.IPv6Subnet, p)
		}
	}
	if l.Subnet.Bits() != 24 || l.IPv6Subnet.Bits() != 64 || cfg.IPv6SubnetLen != 64 {
		t.Errorf("lease %s + %s, IPv6SubnetLen %d", l.Subnet, l.IPv6Subnet, cfg.IPv6SubnetLen)
	}
	// host-gw writes the v6 pair (null data) whenever it has a public IPv6.
	n := getNode(t, c, "self")
	if n.Annotations[pfx+"public-ipv6"] != "2001:db8::1" || n.Annotations[pfx+"backend-v6-data"] != "null" || n.Annotations[pfx+"public-ip"] != "192.0.2.1" {
		t.Errorf("annotations %v", n.Annotations)
	}
}
