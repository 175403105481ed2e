package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/ops/teardown"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/bintest"
	"github.com/weftnet/weft/test/etcdtest"
	"github.com/weftnet/weft/test/kubetest"
	"github.com/weftnet/weft/test/netnstest"
)

// weftdBin is the weftd binary built once for the end-to-end tests.
var (
	weftdOnce sync.Once
	weftdBin  string
	weftdErr  error
)

func buildWeftd(t testing.TB) string {
	t.Helper()
	weftdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "weftd-e2e-")
		if err != nil {
			weftdErr = err
			return
		}
		weftdBin = filepath.Join(dir, "weftd")
		weftdErr = bintest.Build(dir, bintest.Module+"/cmd/weftd")
	})
	if weftdErr != nil {
		t.Fatal(weftdErr)
	}
	return weftdBin
}

func TestMain(m *testing.M) {
	if os.Getenv(streamWriterEnv) != "" {
		// Not a test run: the lease writer process of the streamed
		// benchmarks (bench_test.go), re-executed from this binary.
		os.Exit(runStreamWriter())
	}
	code := m.Run()
	if weftdBin != "" {
		os.RemoveAll(filepath.Dir(weftdBin))
	}
	if pluginsDir != "" {
		os.RemoveAll(pluginsDir)
	}
	os.Exit(code)
}

// cluster is a test cluster: an etcd in this process listening on a bridge
// in the root namespace, and hosts in namespaces joined to that bridge.
type cluster struct {
	t        testing.TB
	bin      string
	dir      string
	etcd     *etcdtest.Server
	endpoint string
	underlay netip.Prefix // e.g. 198.19.77.0/24; .1 is the bridge
	bridge   *netnstest.Bridge
	hosts    []*host
	ttl      time.Duration
	logLevel string
	// iptablesResync is weftd's -iptables-resync: 1 s in the end-to-end
	// tests (restoring rules fast), flanneld's default 5 s in benchmarks.
	iptablesResync string
	// kube, when not nil, runs the agents in Kubernetes mode against it,
	// with netConfPath as their net-conf.json.
	kube        *kubetest.Cluster
	netConfPath string
}

type host struct {
	c       *cluster
	name    string
	ns      *netnstest.NS
	addr    netip.Addr
	envPath string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	pod     *netnstest.NS
	podAddr netip.Addr
	// env is added to weftd's environment (per-host paths).
	env []string
}

// newCluster makes n hosts and an etcd holding the given network config.
func newCluster(t testing.TB, n int, netConf string, ttl time.Duration) *cluster {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	c := &cluster{t: t, bin: buildWeftd(t), dir: t.TempDir(), ttl: ttl, logLevel: "debug", iptablesResync: "1"}
	br := c.newUnderlay()
	c.etcd = etcdtest.Start(t, etcdtest.WithClientAddr(fmt.Sprintf("%s:%d", br.Addr(), freePort(t))))
	c.endpoint = c.etcd.Endpoints()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.etcd.Client().Put(ctx, "/coreos.com/network/config", netConf); err != nil {
		t.Fatal(err)
	}
	c.addHosts(n)
	return c
}

// newUnderlay makes the cluster's test bridge in the root namespace and
// returns its address (.1 of the underlay).
func (c *cluster) newUnderlay() netip.Prefix {
	t := c.t
	c.underlay = pickUnderlay(t)
	c.bridge = netnstest.NewBridge(t)
	br := netip.PrefixFrom(c.underlay.Addr().Next(), 24)
	netnstest.MustRun(t, "ip", "addr", "add", br.String(), "dev", c.bridge.Name)
	return br
}

// addHosts makes n host namespaces on the bridge (host1..hostN) and kills
// their agents at cleanup, printing their logs when the test failed.
func (c *cluster) addHosts(n int) {
	t := c.t
	a := c.underlay.Addr().Next()
	for i := range n {
		a = a.Next()
		h := &host{c: c, name: fmt.Sprintf("host%d", i+1), addr: a}
		h.ns = netnstest.NewNS(t, fmt.Sprintf("h%d", i+1))
		c.bridge.Join(t, h.ns, "eth0", netip.PrefixFrom(a, 24))
		h.envPath = filepath.Join(c.dir, h.name, "subnet.env")
		h.logPath = filepath.Join(c.dir, h.name+".log")
		c.hosts = append(c.hosts, h)
	}
	t.Cleanup(func() {
		for _, h := range c.hosts {
			h.kill()
		}
		for _, h := range c.hosts {
			if err := bintest.CheckLog(h.logPath); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			for _, h := range c.hosts {
				b, _ := os.ReadFile(h.logPath)
				t.Logf("=== %s log:\n%s", h.name, b)
			}
		}
	})
}

var (
	underlayMu   sync.Mutex
	underlayNext = -1
)

// pickUnderlay returns a /24 of 198.19.0.0/16 (the upper half of the
// benchmarking range; labs keep to the lower half, 198.18.0.0/16) that no
// route of the root namespace touches, distinct for every test of this
// process, so that tests can run in parallel.
func pickUnderlay(t testing.TB) netip.Prefix {
	t.Helper()
	underlayMu.Lock()
	defer underlayMu.Unlock()
	if underlayNext < 0 {
		n, _ := strconv.ParseUint(netnstest.Suffix(2), 16, 8)
		underlayNext = int(n)
	}
	routes := netnstest.MustRun(t, "ip", "-4", "route", "show", "table", "all")
	for range 256 {
		third := underlayNext % 256
		underlayNext++
		p := netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", third))
		if !strings.Contains(routes, fmt.Sprintf("198.19.%d.", third)) {
			return p
		}
	}
	t.Fatal("no free /24 in 198.19.0.0/16 for the test underlay")
	return netip.Prefix{}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs weftd inside the host's namespace.
func (h *host) start(extra ...string) {
	t := h.c.t
	t.Helper()
	args := []string{"netns", "exec", h.ns.Name, h.c.bin}
	if h.c.kube != nil {
		args = append(args, "-kube-subnet-mgr", "-kubeconfig-file", h.c.kube.Kubeconfig, "-net-config-path", h.c.netConfPath)
	} else {
		args = append(args, "-etcd-endpoints", h.c.endpoint, "-subnet-lease-ttl", h.c.ttl.String())
	}
	args = append(args, "-iface", "eth0", "-subnet-file", h.envPath,
		"-ip-masq", "-resync-interval", "2s", "-iptables-resync", h.c.iptablesResync,
		"-healthz-ip", h.addr.String(), "-healthz-port", "8471", "-log-level", h.c.logLevel)
	args = append(args, extra...)
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command("ip", args...)
	// NODE_NAME: the host's Node in Kubernetes mode (ignored otherwise).
	h.cmd.Env = append(append(os.Environ(), h.env...), "NODE_NAME="+h.name)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(done)
	}(h.cmd, h.done)
}

// kill stops weftd with SIGKILL (ip netns exec execs it, so the PID is
// weftd's own) and waits for it.
func (h *host) kill() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.done
	h.cmd = nil
}

// stop stops weftd with SIGTERM and waits for it to exit.
func (h *host) stop() error {
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: weftd did not exit within 10s of SIGTERM", h.name)
	}
	st := h.cmd.ProcessState
	h.cmd = nil
	if !st.Success() {
		return fmt.Errorf("%s: weftd exited with %v after SIGTERM", h.name, st)
	}
	return nil
}

// waitReady waits for /readyz and returns the host's subnet.env.
func (h *host) waitReady() *subnetenv.Env {
	t := h.c.t
	t.Helper()
	url := fmt.Sprintf("http://%s:8471/readyz", h.addr)
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		// The host's address is reachable from the root namespace over the
		// test bridge.
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				env, err := subnetenv.Read(h.envPath)
				if err != nil {
					t.Fatalf("%s ready but subnet.env: %v", h.name, err)
				}
				return env
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: weftd not ready within 20s (last: %s)", h.name, last)
	return nil
}

// addPod puts a "pod" namespace behind a veth holding <subnet>.2, with the
// host's side holding <subnet>.1 (what the CNI bridge would be).
func (h *host) addPod(env *subnetenv.Env) {
	t := h.c.t
	t.Helper()
	h.pod = netnstest.NewNS(t, "p"+h.name[4:])
	gw := env.Subnet.Addr()
	h.podAddr = gw.Next()
	netnstest.NewVeth(t, h.ns, "vpod", netip.PrefixFrom(gw, env.Subnet.Bits()), h.pod, "eth0", netip.PrefixFrom(h.podAddr, env.Subnet.Bits()))
	h.pod.MustExec(t, "ip", "route", "add", "default", "via", gw.String())
}

// eventually retries f until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func (c *cluster) checkMesh() {
	c.t.Helper()
	for _, a := range c.hosts {
		for _, b := range c.hosts {
			if a == b {
				continue
			}
			// From the host itself and from its pod.
			eventually(c.t, 10*time.Second, fmt.Sprintf("%s reaches %s's pod %s", a.name, b.name, b.podAddr), func() error {
				return a.ns.Ping(b.podAddr)
			})
			eventually(c.t, 10*time.Second, fmt.Sprintf("%s's pod reaches %s's pod %s", a.name, b.name, b.podAddr), func() error {
				return a.pod.Ping(b.podAddr)
			})
		}
	}
}

func startAll(t testing.TB, c *cluster) map[*host]*subnetenv.Env {
	t.Helper()
	for _, h := range c.hosts {
		h.start()
	}
	envs := map[*host]*subnetenv.Env{}
	seen := map[netip.Prefix]string{}
	for _, h := range c.hosts {
		env := h.waitReady()
		envs[h] = env
		sn := env.Subnet.Masked()
		if other, dup := seen[sn]; dup {
			t.Fatalf("%s and %s both hold %s", other, h.name, sn)
		}
		seen[sn] = h.name
		if len(env.Networks) != 1 || env.Networks[0].String() != "10.244.0.0/16" || !env.IPMasq {
			t.Errorf("%s: subnet.env %+v", h.name, env)
		}
		if env.Subnet.Addr() != sn.Addr().Next() || !env.Networks[0].Contains(sn.Addr()) {
			t.Errorf("%s: FLANNEL_SUBNET %s is not the first address of a subnet of the network", h.name, env.Subnet)
		}
		h.addPod(env)
	}
	return envs
}

func TestE2EVXLAN(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 4*time.Second)
	envs := startAll(t, c)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]

	// MTU: the device and subnet.env agree (veth MTU 1500 - 50).
	for _, h := range c.hosts {
		if envs[h].MTU != 1450 {
			t.Errorf("%s: FLANNEL_MTU=%d, want 1450", h.name, envs[h].MTU)
		}
		if out := h.ns.MustExec(t, "ip", "-d", "link", "show", "flannel.1"); !strings.Contains(out, "mtu 1450") ||
			!strings.Contains(out, "vxlan id 1") || !strings.Contains(out, "dstport 8472") || !strings.Contains(out, "nolearning") {
			t.Errorf("%s: flannel.1 is not as flanneld makes it:\n%s", h.name, out)
		}
	}
	c.checkMesh()

	// iptables: the masquerade chain is there, rule for rule.
	out := h1.ns.MustExec(t, "iptables", "-w", "-t", "nat", "-S", "FLANNEL-POSTRTG")
	if !strings.Contains(out, "--mark 0x4000/0x4000") || !strings.Contains(out, "MASQUERADE") {
		t.Errorf("FLANNEL-POSTRTG:\n%s", out)
	}

	// A route deleted by hand comes back.
	sn2 := envs[h2].Subnet.Masked()
	h1.ns.MustExec(t, "ip", "route", "del", sn2.String())
	eventually(t, 5*time.Second, "deleted route restored", func() error {
		if out, _ := h1.ns.Exec("ip", "route", "show", sn2.String()); !strings.Contains(out, "flannel.1") {
			return fmt.Errorf("route to %s missing: %q", sn2, out)
		}
		return nil
	})

	// SIGKILL host2's agent and restart it while a ping runs across it.
	mac := linkMAC(t, h2.ns)
	ifindex := linkIndex(t, h2.ns)
	ping := exec.Command("ip", "netns", "exec", h1.pod.Name, "ping", "-n", "-i", "0.01", "-c", "600", "-W", "1", h2.podAddr.String())
	pingOut := &strings.Builder{}
	ping.Stdout = pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	h2.kill()
	time.Sleep(300 * time.Millisecond)
	h2.start()
	env2 := h2.waitReady()
	if env2.Subnet != envs[h2].Subnet {
		t.Errorf("host2 came back with %s, had %s", env2.Subnet, envs[h2].Subnet)
	}
	if got := linkMAC(t, h2.ns); got != mac {
		t.Errorf("host2's VtepMAC changed across a restart: %s -> %s", mac, got)
	}
	if got := linkIndex(t, h2.ns); got != ifindex {
		t.Errorf("host2's flannel.1 was recreated (ifindex %d -> %d)", ifindex, got)
	}
	ping.Wait()
	tx, rx := pingCounts(t, pingOut.String())
	t.Logf("ping across the restart: %d sent, %d received", tx, rx)
	if tx < 100 || rx != tx {
		t.Errorf("ping across host2's restart lost packets: %d sent, %d received\n%s", tx, rx, tail(pingOut.String()))
	}

	// SIGTERM leaves the data plane in place.
	if err := h2.stop(); err != nil {
		t.Error(err)
	}
	if err := h1.pod.Ping(h2.podAddr); err != nil {
		t.Errorf("after a clean stop of host2's agent, host1's pod no longer reaches host2's pod: %v", err)
	}
	h2.start()
	h2.waitReady()

	// host3's lease expires (agent killed, short TTL): its routes,
	// neighbour and FDB entries go from both other hosts.
	sn3 := envs[h3].Subnet.Masked()
	gw3 := sn3.Addr().String()
	h3.kill()
	for _, h := range []*host{h1, h2} {
		eventually(t, 3*c.ttl, h.name+" forgets host3", func() error {
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
}

func TestE2EHostGW(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, 30*time.Second)
	envs := startAll(t, c)
	for _, h := range c.hosts {
		if envs[h].MTU != 1500 {
			t.Errorf("%s: FLANNEL_MTU=%d, want the interface's 1500", h.name, envs[h].MTU)
		}
	}
	c.checkMesh()
	h1, h2 := c.hosts[0], c.hosts[1]
	want := fmt.Sprintf("via %s dev eth0", h2.addr)
	if out := h1.ns.MustExec(t, "ip", "route", "show", envs[h2].Subnet.Masked().String()); !strings.Contains(out, want) {
		t.Errorf("host-gw route on host1 = %q, want %q", out, want)
	}

	// An operator deletes host1's lease key by hand: the agent notices,
	// takes the same subnet again, and the other hosts keep (or get back)
	// their route to it.
	sn1 := envs[h1].Subnet.Masked()
	key := "/coreos.com/network/subnets/" + strings.ReplaceAll(sn1.String(), "/", "-")
	ctx := context.Background()
	if _, err := c.etcd.Client().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "host1 takes its subnet again", func() error {
		resp, err := c.etcd.Client().Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
			return fmt.Errorf("no leased key %s yet (err %v)", key, err)
		}
		return nil
	})
	if env, err := subnetenv.Read(h1.envPath); err != nil || env.Subnet != envs[h1].Subnet {
		t.Errorf("host1's subnet.env after re-acquiring: %+v, %v", env, err)
	}
	eventually(t, 10*time.Second, "host2 reaches host1's pod again", func() error { return h2.pod.Ping(h1.podAddr) })
}

// readyz returns the status code of the host's /readyz (0 if unreachable).
func readyz(h *host) int {
	resp, err := http.Get(fmt.Sprintf("http://%s:8471/readyz", h.addr))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func linkMAC(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	out := ns.MustExec(t, "cat", "/sys/class/net/flannel.1/address")
	return strings.TrimSpace(out)
}

func linkIndex(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	out := ns.MustExec(t, "cat", "/sys/class/net/flannel.1/ifindex")
	i, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func pingCounts(t *testing.T, out string) (tx, rx int) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := pingSummary.FindStringSubmatch(sc.Text()); m != nil {
			tx, _ = strconv.Atoi(m[1])
			rx, _ = strconv.Atoi(m[2])
			return tx, rx
		}
	}
	t.Fatalf("no ping summary in:\n%s", tail(out))
	return 0, 0
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// TestE2ENodeTeardown decommissions a node: the agent stops, then the
// teardown removes its lease, device, routes, iptables chains and
// subnet.env, and the other node forgets it.
func TestE2ENodeTeardown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 30*time.Second)
	envs := startAll(t, c)
	h1, h2 := c.hosts[0], c.hosts[1]
	c.checkMesh()
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	sn1 := envs[h1].Subnet.Masked()
	// The operator's command, run on the node.
	weftDir := t.TempDir()
	if err := bintest.Build(weftDir, bintest.Module+"/cmd/weft"); err != nil {
		t.Fatal(err)
	}
	weft := filepath.Join(weftDir, "weft")
	out, err := h1.ns.Exec(weft, "node", "teardown", "-etcd-endpoints", c.endpoint,
		"-subnet-file", h1.envPath, "-public-ip", h1.addr.String())
	if err != nil {
		t.Fatalf("weft node teardown: %v", err)
	}
	t.Logf("weft node teardown:\n%s", out)
	for _, want := range []string{"released leases: " + sn1.String(),
		"deleted links:   flannel.1", "iptables chains removed: true", "nftables tables removed: true", "subnet.env removed: true"} {
		if !strings.Contains(out, want) {
			t.Errorf("teardown output lacks %q", want)
		}
	}
	resp, err := c.etcd.Client().Get(context.Background(), "/coreos.com/network/subnets/"+strings.ReplaceAll(sn1.String(), "/", "-"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("lease of %s still in etcd (err %v)", sn1, err)
	}
	if out, err := h1.ns.Exec("ip", "link", "show", "flannel.1"); err == nil {
		t.Errorf("flannel.1 still there: %s", out)
	}
	if out, _ := h1.ns.Exec("ip", "route", "show", "10.244.0.0/16"); strings.Contains(out, "flannel") || strings.Contains(out, " via ") {
		t.Errorf("routes left: %s", out)
	}
	for _, tbl := range []string{"nat", "filter"} {
		if out, _ := h1.ns.Exec("iptables", "-w", "-t", tbl, "-S"); strings.Contains(out, "FLANNEL") {
			t.Errorf("iptables %s still has flannel rules:\n%s", tbl, out)
		}
	}
	if _, err := os.Stat(h1.envPath); !os.IsNotExist(err) {
		t.Errorf("subnet.env still there: %v", err)
	}
	eventually(t, 5*time.Second, "host2 forgets host1", func() error {
		if out, _ := h2.ns.Exec("ip", "route", "show", sn1.String()); strings.TrimSpace(out) != "" {
			return fmt.Errorf("route still there: %s", out)
		}
		return nil
	})
	// A second teardown has nothing left to do and does not fail.
	if err := h1.ns.Do(func() error {
		_, err := teardown.Run(context.Background(), teardown.Options{Leases: etcdstore.NewWithClient(c.etcd.Client(), etcdstore.Options{}), SubnetFile: h1.envPath, PublicIP: h1.addr})
		return err
	}); err != nil {
		t.Errorf("second teardown: %v", err)
	}
}

// TestE2EEtcdRestart stops etcd under two running agents: traffic keeps
// flowing, the agents stay up (no exit, no log flood), and once etcd is
// back a new host is programmed by both.
func TestE2EEtcdRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 30*time.Second)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	c.hosts = c.hosts[:2]
	startAll(t, c)
	c.checkMesh()
	c.etcd.Stop()
	// The agents notice (their watch checks etcd every 5 s) and say they
	// are not ready, while the data plane stays as it was.
	for _, h := range []*host{h1, h2} {
		eventually(t, 10*time.Second, h.name+" reports not ready while etcd is down", func() error {
			if code := readyz(h); code != http.StatusServiceUnavailable {
				return fmt.Errorf("/readyz answered %d", code)
			}
			return nil
		})
	}
	if err := h1.pod.Ping(h2.podAddr); err != nil {
		t.Errorf("with etcd down, pods no longer reach each other: %v", err)
	}
	for _, h := range []*host{h1, h2} {
		select {
		case <-h.done:
			t.Fatalf("%s: weftd exited while etcd was down", h.name)
		default:
		}
	}
	c.etcd.Restart()
	for _, h := range []*host{h1, h2} {
		eventually(t, 15*time.Second, h.name+" ready again once etcd is back", func() error {
			if code := readyz(h); code != http.StatusOK {
				return fmt.Errorf("/readyz answered %d", code)
			}
			return nil
		})
	}
	c.hosts = append(c.hosts, h3)
	h3.start()
	env3 := h3.waitReady()
	h3.addPod(env3)
	for _, h := range []*host{h1, h2} {
		eventually(t, 15*time.Second, h.name+" reaches the new host's pod", func() error { return h.pod.Ping(h3.podAddr) })
	}
	for _, h := range []*host{h1, h2} {
		log, _ := os.ReadFile(h.logPath)
		n := strings.Count(string(log), "level=WARN") + strings.Count(string(log), "level=ERROR")
		t.Logf("%s: %d warnings and errors over the outage", h.name, n)
		if os.Getenv("WEFT_E2E_LOG") != "" {
			t.Logf("%s", log)
		}
		if n > 12 {
			t.Errorf("%s logged %d warnings and errors over an etcd outage:\n%s", h.name, n, tail(string(log)))
		}
	}
}
