package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/cnitest"
	"github.com/weftnet/weft/test/kubetest"
	"github.com/weftnet/weft/test/netnstest"
)

// newKubeCluster makes n hosts on a test bridge and a real control plane
// (etcd, kube-apiserver, kube-controller-manager allocating /24s of
// 10.244.0.0/16) listening on the bridge address; the agents run with
// -kube-subnet-mgr and netConf as their net-conf.json.
func newKubeCluster(t *testing.T, n int, netConf string) *cluster {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	c := &cluster{t: t, bin: buildWeftd(t), dir: t.TempDir(), logLevel: "debug", iptablesResync: "1"}
	br := c.newUnderlay()
	c.kube = kubetest.Start(t, kubetest.Options{Addr: br.Addr()})
	c.netConfPath = filepath.Join(c.dir, "net-conf.json")
	if err := os.WriteFile(c.netConfPath, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.addHosts(n)
	return c
}

// register creates the host's Node as its kubelet would.
func (h *host) register() {
	h.c.kube.CreateNode(h.c.t, h.name, kubetest.NodeOptions{InternalIP: h.addr, Images: 5})
}

// cniPod attaches a pod to the host through the real flannel plugin.
func (h *host) cniPod(bin string) *cnitest.Pod {
	ch := cnitest.Attach(h.c.t, h.ns, bin, h.envPath)
	return ch.AddPod(h.c.t, ch.StockConfList(h.c.t, "1.0.0"))
}

// podPing pings b from pod a once.
func podPing(a *cnitest.Pod, b netip.Addr) error {
	out, err := a.Exec("ping", "-n", "-c1", "-W1", b.String())
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// podPingMatrix checks that every pod reaches every other.
func podPingMatrix(t *testing.T, pods map[*host]*cnitest.Pod) {
	t.Helper()
	for ha, a := range pods {
		for hb, b := range pods {
			if ha == hb {
				continue
			}
			eventually(t, 15*time.Second, fmt.Sprintf("pod on %s reaches pod %s on %s", ha.name, b.Addr.Addr(), hb.name), func() error {
				return podPing(a, b.Addr.Addr())
			})
		}
	}
}

func (c *cluster) node(name string) *corev1.Node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.kube.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatalf("reading node %s: %v", name, err)
	}
	return n
}

func (c *cluster) patchNode(name, body string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.kube.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
		c.t.Fatalf("patching node %s: %v", name, err)
	}
}

// logLines counts the lines of the host's log that hold every one of subs.
func (h *host) logLines(subs ...string) int {
	b, _ := os.ReadFile(h.logPath)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func waitReadyz(t *testing.T, h *host, want int, timeout time.Duration, what string) {
	t.Helper()
	eventually(t, timeout, h.name+" "+what, func() error {
		if code := readyz(h); code != want {
			return fmt.Errorf("/readyz answered %d", code)
		}
		return nil
	})
}

const pfx = "flannel.alpha.coreos.com/"

// TestE2EKube runs weftd in Kubernetes mode on three hosts against a real
// apiserver and controller manager, with pods attached through the real
// CNI plugin, and then puts the mode through what a cluster does to it: a
// hand edit of a node's annotations, a peer with malformed annotations, a
// node deleted, the apiserver down for ten seconds, and a node added
// afterwards that waits for its podCIDR.
func TestE2EKube(t *testing.T) {
	t.Parallel()
	c := newKubeCluster(t, 4, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	bin := buildPlugins(t)
	h1, h2, h3, h4 := c.hosts[0], c.hosts[1], c.hosts[2], c.hosts[3]
	first := []*host{h1, h2, h3}
	for _, h := range first {
		h.register()
		h.start()
	}
	pods := map[*host]*cnitest.Pod{}
	envs := map[*host]*subnetenv.Env{}
	seen := map[netip.Prefix]string{}
	for _, h := range first {
		env := h.waitReady()
		envs[h] = env
		cidr := c.kube.WaitPodCIDR(t, h.name, 30*time.Second)
		sn := env.Subnet.Masked()
		if len(cidr) != 1 || cidr[0] != sn || env.Subnet.Addr() != sn.Addr().Next() {
			t.Errorf("%s: FLANNEL_SUBNET %s, but the Node's podCIDRs are %v", h.name, env.Subnet, cidr)
		}
		if other, dup := seen[sn]; dup {
			t.Fatalf("%s and %s both hold %s", other, h.name, sn)
		}
		seen[sn] = h.name
		if len(env.Networks) != 1 || env.Networks[0].String() != "10.244.0.0/16" || env.MTU != 1450 || !env.IPMasq {
			t.Errorf("%s: subnet.env %+v", h.name, env)
		}
		pods[h] = h.cniPod(bin)
	}
	podPingMatrix(t, pods)

	// The Nodes carry flanneld's annotations and condition.
	for _, h := range first {
		n := c.node(h.name)
		want := map[string]string{
			pfx + "kube-subnet-manager": "true",
			pfx + "backend-type":        "vxlan",
			pfx + "backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, linkMAC(t, h.ns)),
			pfx + "public-ip":           h.addr.String(),
		}
		for k, v := range want {
			if n.Annotations[k] != v {
				t.Errorf("%s: annotation %s = %q, want %q", h.name, k, n.Annotations[k], v)
			}
		}
		eventually(t, 10*time.Second, h.name+" NetworkUnavailable=False", func() error {
			for _, cnd := range c.node(h.name).Status.Conditions {
				if cnd.Type == corev1.NodeNetworkUnavailable && cnd.Status == corev1.ConditionFalse && cnd.Reason == "FlannelIsUp" {
					return nil
				}
			}
			return fmt.Errorf("conditions %+v", c.node(h.name).Status.Conditions)
		})
	}

	// host1's backend-data edited by hand: restored.
	orig := c.node("host1").Annotations[pfx+"backend-data"]
	c.patchNode("host1", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:99\"}"}}}`)
	eventually(t, 10*time.Second, "host1's backend-data restored", func() error {
		if got := c.node("host1").Annotations[pfx+"backend-data"]; got != orig {
			return fmt.Errorf("backend-data %s", got)
		}
		return nil
	})
	eventually(t, 10*time.Second, "host2's pod reaches host1's pod after the edit", func() error { return podPing(pods[h2], pods[h1].Addr.Addr()) })

	// A peer with malformed annotations: each agent logs it once, and
	// nothing else changes.
	c.kube.CreateNode(t, "bogus", kubetest.NodeOptions{PodCIDR: "10.244.250.0/24", Annotations: map[string]string{
		pfx + "kube-subnet-manager": "true", pfx + "backend-type": "vxlan",
		pfx + "backend-data": `{"VNI":1,"VtepMAC":"not-a-mac"}`, pfx + "public-ip": "198.51.100.7",
	}})
	c.patchNode("bogus", `{"metadata":{"labels":{"touched":"yes"}}}`) // an update with the same bad data
	for _, h := range first {
		eventually(t, 10*time.Second, h.name+" logs the bogus node", func() error {
			if n := h.logLines("skipping node", "node=bogus", "VtepMAC"); n != 1 {
				return fmt.Errorf("%d lines", n)
			}
			return nil
		})
	}
	podPingMatrix(t, pods)
	for _, h := range first {
		if out := h.ns.MustExec(t, "ip", "route", "show"); strings.Contains(out, "198.51.100.7") {
			t.Errorf("%s programmed the bogus node:\n%s", h.name, out)
		}
		if n := h.logLines("skipping node", "node=bogus"); n != 1 {
			t.Errorf("%s logged the bogus node %d times", h.name, n)
		}
	}

	// host3's Node deleted (its agent gone): the others forget it.
	sn3 := envs[h3].Subnet.Masked()
	gw3 := sn3.Addr().String()
	h3.kill()
	c.kube.DeleteNode(t, "host3")
	for _, h := range []*host{h1, h2} {
		eventually(t, 10*time.Second, h.name+" forgets host3", func() error {
			if out, _ := h.ns.Exec("ip", "route", "show", sn3.String()); strings.TrimSpace(out) != "" {
				return fmt.Errorf("route still there: %s", out)
			}
			if out, _ := h.ns.Exec("ip", "neigh", "show", "dev", "flannel.1"); strings.Contains(out, gw3+" ") {
				return fmt.Errorf("neighbour still there: %s", out)
			}
			if out, _ := h.ns.Exec("bridge", "fdb", "show", "dev", "flannel.1"); strings.Contains(out, h3.addr.String()) {
				return fmt.Errorf("fdb entry still there: %s", out)
			}
			return nil
		})
	}
	delete(pods, h3)

	// The apiserver down for ten seconds: traffic flows, /readyz says so.
	ping := exec.Command("ip", "netns", "exec", pods[h1].NSName, "ping", "-n", "-i", "0.1", "-c", "180", "-W", "1", pods[h2].Addr.Addr().String())
	pingOut := &strings.Builder{}
	ping.Stdout = pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	c.kube.StopAPIServer()
	for _, h := range []*host{h1, h2} {
		waitReadyz(t, h, http.StatusServiceUnavailable, 15*time.Second, "reports not ready while the apiserver is down")
	}
	time.Sleep(time.Until(stopped.Add(10 * time.Second))) // the outage's length, not a condition
	for _, h := range []*host{h1, h2} {
		select {
		case <-h.done:
			t.Fatalf("%s: weftd exited while the apiserver was down", h.name)
		default:
		}
	}
	c.kube.StartAPIServer()
	for _, h := range []*host{h1, h2} {
		waitReadyz(t, h, http.StatusOK, 30*time.Second, "ready again once the apiserver is back")
	}
	if err := ping.Wait(); err != nil {
		t.Logf("ping: %v", err)
	}
	tx, rx := pingCounts(t, pingOut.String())
	t.Logf("ping across the apiserver outage: %d sent, %d received", tx, rx)
	if tx < 100 || rx != tx {
		t.Errorf("pod traffic lost packets over the apiserver outage: %d sent, %d received\n%s", tx, rx, tail(pingOut.String()))
	}

	// A node added afterwards, before the controller manager assigns its
	// podCIDR: its agent waits (saying so once), then converges.
	c.kube.StopControllerManager()
	h4.register()
	h4.start()
	eventually(t, 20*time.Second, "host4 waits for its podCIDR", func() error {
		if h4.logLines("has no podCIDR yet") != 1 {
			return fmt.Errorf("no line about the missing podCIDR")
		}
		return nil
	})
	if code := readyz(h4); code == http.StatusOK {
		t.Errorf("host4 is ready without a podCIDR")
	}
	c.kube.StartControllerManager()
	waitReadyz(t, h4, http.StatusOK, 60*time.Second, "ready once its podCIDR is assigned")
	if n := h4.logLines("has no podCIDR yet"); n != 1 {
		t.Errorf("host4 logged the missing podCIDR %d times", n)
	}
	env4, err := subnetenv.Read(h4.envPath)
	if err != nil {
		t.Fatal(err)
	}
	if cidr := c.kube.WaitPodCIDR(t, "host4", 5*time.Second); cidr[0] != env4.Subnet.Masked() {
		t.Errorf("host4: FLANNEL_SUBNET %s, podCIDR %v", env4.Subnet, cidr)
	}
	pods[h4] = h4.cniPod(bin)
	podPingMatrix(t, pods)
}
