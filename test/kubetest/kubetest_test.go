package kubetest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCluster starts the control plane on loopback, registers two nodes as
// kubelets would, waits for the controller manager to give them distinct
// /24s of the cluster CIDR, and survives an apiserver restart.
func TestCluster(t *testing.T) {
	c := Start(t, Options{ClusterCIDR: netip.MustParsePrefix("10.77.0.0/16"), NodeCIDRMaskSize: 24})
	c.CreateNode(t, "node-a", NodeOptions{InternalIP: netip.MustParseAddr("192.0.2.1"), Images: 3})
	c.CreateNode(t, "node-b", NodeOptions{InternalIP: netip.MustParseAddr("192.0.2.2")})
	a := c.WaitPodCIDR(t, "node-a", 60*time.Second)
	b := c.WaitPodCIDR(t, "node-b", 60*time.Second)
	cluster := netip.MustParsePrefix("10.77.0.0/16")
	for _, p := range [][]netip.Prefix{a, b} {
		if len(p) != 1 || p[0].Bits() != 24 || !cluster.Contains(p[0].Addr()) {
			t.Fatalf("podCIDRs %v: want one /24 of %s", p, cluster)
		}
	}
	if a[0] == b[0] {
		t.Fatalf("both nodes got %s", a[0])
	}

	c.StopAPIServer()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := c.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("the apiserver answered after StopAPIServer")
	}
	c.StartAPIServer()
	c.DeleteNode(t, "node-a")
	c.CreateNode(t, "node-c", NodeOptions{})
	if p := c.WaitPodCIDR(t, "node-c", 60*time.Second); p[0] == b[0] {
		t.Fatalf("node-c got node-b's %s", p[0])
	}
}

// TestNewNodeKubeletSized checks the synthetic node carries what a
// kubelet's would.
func TestNewNodeKubeletSized(t *testing.T) {
	n := NewNode("n1", NodeOptions{InternalIP: netip.MustParseAddr("192.0.2.9"), PodCIDR: "10.0.3.0/24", Images: 5})
	if n.Spec.PodCIDR != "10.0.3.0/24" || len(n.Spec.PodCIDRs) != 1 || len(n.Status.Images) != 5 ||
		len(n.Status.Conditions) != 4 || n.Status.Addresses[0].Address != "192.0.2.9" || n.Labels["kubernetes.io/hostname"] != "n1" {
		t.Fatalf("node %+v", n)
	}
}
