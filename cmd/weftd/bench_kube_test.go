package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/kubetest"
)

// The Kubernetes-mode benchmarks mirror the etcd ones above, with the peers
// as Node objects in a real apiserver (kubelet-sized: addresses,
// conditions, capacity, 20 images; podCIDR set, flannel's annotations):
//
//	BenchmarkKubeColdStart/nodes=N  start to ready (every peer programmed), CPU, RSS
//	BenchmarkKubeOneChange5000      one Node added and deleted with 5,000 present
//
// Run: go test -run '^$' -bench Kube -benchtime 3x ./cmd/weftd/

// kubeBenchNet is the net-conf.json of the benchmarks.
const kubeBenchNet = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func newKubeBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	c := &cluster{t: b, bin: buildWeftd(b), dir: b.TempDir(), logLevel: "info", iptablesResync: "5"}
	if bin := os.Getenv("WEFT_BENCH_WEFTD"); bin != "" {
		c.bin = bin
	}
	br := c.newUnderlay()
	c.kube = kubetest.Start(b, kubetest.Options{Addr: br.Addr(), NoControllerManager: true})
	c.netConfPath = filepath.Join(c.dir, "net-conf.json")
	if err := os.WriteFile(c.netConfPath, []byte(kubeBenchNet), 0o644); err != nil {
		b.Fatal(err)
	}
	c.addHosts(0) // the cleanup that kills the agents
	return &benchEnv{c: c}
}

// fakeNodeName and fakeNodeOptions describe the i-th synthetic peer Node,
// with the subnet, public IP and VTEP MAC of fakePeer(i).
func fakeNodeName(i int) string { return fmt.Sprintf("peer-%05d", i) }

func fakeNodeOptions(i int) kubetest.NodeOptions {
	k, v := fakePeer(i)
	sn, _, _ := subnet.ParseSubnetKey(strings.TrimPrefix(k, "/coreos.com/network/subnets/"))
	attrs, _ := subnet.ParseLeaseAttrs([]byte(v))
	return kubetest.NodeOptions{
		InternalIP: attrs.PublicIP,
		PodCIDR:    sn.String(),
		Images:     20,
		Annotations: map[string]string{
			pfx + "kube-subnet-manager": "true",
			pfx + "backend-type":        "vxlan",
			pfx + "backend-data":        string(attrs.BackendData),
			pfx + "public-ip":           attrs.PublicIP.String(),
		},
	}
}

// createNodes creates peer Nodes [from, to) with 16 clients in parallel.
func createNodes(b *testing.B, c *cluster, from, to int) {
	b.Helper()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				_, err := c.kube.Client.CoreV1().Nodes().Create(context.Background(), kubetest.NewNode(fakeNodeName(i), fakeNodeOptions(i)), metav1.CreateOptions{})
				if err != nil {
					select {
					case errs <- fmt.Errorf("node %d: %w", i, err):
					default:
					}
				}
			}
		})
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("created %d Nodes in %s", to-from, time.Since(t0).Round(time.Millisecond))
}

// newKubeHost adds a host whose Node (podCIDR 10.255.i.0/24) is registered.
func (e *benchEnv) newKubeHost(b *testing.B, i int) *host {
	b.Helper()
	h := e.newHost(b, i)
	e.c.kube.CreateNode(b, h.name, kubetest.NodeOptions{InternalIP: h.addr, PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 255, byte(i), 0}), 24).String(), Images: 20})
	return h
}

func BenchmarkKubeColdStart(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			e := newKubeBenchEnv(b)
			createNodes(b, e.c, 0, n)
			var cpu, rss, ms float64
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				h := e.newKubeHost(b, i)
				b.StartTimer()
				t0 := time.Now()
				h.start()
				waitReadyFast(b, h, 120*time.Second)
				ms += float64(time.Since(t0).Microseconds()) / 1000
				b.StopTimer()
				c, r := procStats(b, h.cmd.Process.Pid)
				logMem(b, h.cmd.Process.Pid)
				if dst := os.Getenv("WEFT_BENCH_LOG"); dst != "" {
					log, _ := os.ReadFile(h.logPath)
					_ = os.WriteFile(dst, log, 0o644)
				}
				cpu += c
				rss += r
				h.kill()
				// Its Node would be a peer of the next round.
				e.c.kube.DeleteNode(b, h.name)
				b.StartTimer()
			}
			b.ReportMetric(ms/float64(b.N), "ms-to-ready")
			b.ReportMetric(cpu/float64(b.N), "cpu-s")
			b.ReportMetric(rss/float64(b.N), "rss-MB")
		})
	}
}

func BenchmarkKubeOneChange5000(b *testing.B) {
	e := newKubeBenchEnv(b)
	createNodes(b, e.c, 0, 5000)
	h := e.newKubeHost(b, 0)
	h.start()
	waitReadyFast(b, h, 120*time.Second)
	w := watchRoutes(b, h)
	time.Sleep(500 * time.Millisecond) // settle before measuring idle CPU
	c0, _ := procStats(b, h.cmd.Process.Pid)
	time.Sleep(2 * time.Second)
	c1, rss := procStats(b, h.cmd.Process.Pid)
	w.drain()
	ctx := context.Background()
	nodes := e.c.kube.Client.CoreV1().Nodes()
	var addMs, delMs, createMs float64
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := nodes.Create(ctx, kubetest.NewNode(fakeNodeName(6000), fakeNodeOptions(6000)), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		// The apiserver's own share: the create call until it answered.
		createMs += float64(time.Since(t0).Microseconds()) / 1000
		addMs += float64(w.waitFor(b, 24, 1, 10*time.Second).Sub(t0).Microseconds()) / 1000
		t0 = time.Now()
		if err := nodes.Delete(ctx, fakeNodeName(6000), metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		delMs += float64(w.waitFor(b, 25, 1, 10*time.Second).Sub(t0).Microseconds()) / 1000
	}
	b.ReportMetric(addMs/float64(b.N), "ms-add-to-kernel")
	b.ReportMetric(createMs/float64(b.N), "ms-create-call")
	b.ReportMetric(delMs/float64(b.N), "ms-del-to-kernel")
	b.ReportMetric((c1-c0)/2*100, "idle-cpu-%")
	b.ReportMetric(rss, "rss-MB")
}

// logMem logs the anonymous and file-backed parts of a process's RSS.
func logMem(b *testing.B, pid int) {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var parts []string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "RssAnon") || strings.HasPrefix(line, "RssFile") {
			parts = append(parts, strings.Join(strings.Fields(line), " "))
		}
	}
	b.Logf("weftd %d: %s", pid, strings.Join(parts, ", "))
}
