package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/cniplugin"
	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/cnitest"
	"github.com/weftnet/weft/test/netnstest"
	"github.com/weftnet/weft/test/podmantest"
)

// podmanNet is one podman network on a test host: podman driving the
// flannel plugin with the stock plugins (flannel, then portmap) and the
// plugin cache and host-local store of its own, under the test's temp
// directory. Nothing else attaches to this host, so the network's name and
// data directories belong to podman alone (see Documentation/cni.md on
// sharing them between runtimes).
type podmanNet struct {
	pm   *podmantest.Podman
	h    *host
	name string
	// files reads the plugin cache and host-local store.
	files *cnitest.Host
	// hostVeths are the host's veths before any container (its eth0).
	hostVeths []string
}

func newPodmanNet(t *testing.T, pm *podmantest.Podman, h *host, bin, cniVersion string) *podmanNet {
	t.Helper()
	n := &podmanNet{
		pm:    pm,
		h:     h,
		name:  "weft-podman-" + netnstest.Suffix(6),
		files: cnitest.Attach(t, h.ns, bin, h.envPath),
	}
	b, err := cniplugin.ConfList{
		Name: n.name, CNIVersion: cniVersion,
		SubnetFile: h.envPath, DataDir: n.files.DataDir, IPAMDataDir: n.files.IPAMDir,
	}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	n.pm.AddNetwork(t, n.name, b)
	n.hostVeths = n.files.Veths(t)
	return n
}

// addr returns a container's address on the network.
func (n *podmanNet) addr(t *testing.T, ctr string) netip.Addr {
	t.Helper()
	out := n.pm.Must(t, "inspect", "--format", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", n.name), ctr)
	a, err := netip.ParseAddr(out)
	if err != nil {
		t.Fatalf("address of container %s on %s: %q: %v", ctr, n.name, out, err)
	}
	return a
}

// assertAttached checks the plugin's traces of exactly the containers ids:
// one cache file each, one address each in host-local's store, one veth
// each on the host.
func (n *podmanNet) assertAttached(t *testing.T, what string, ids ...string) {
	t.Helper()
	files := n.files.CacheFiles(t)
	slices.Sort(files)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("%s: plugin cache files %v, want %v", what, files, want)
	}
	if ips := n.files.AllocatedIPs(t, n.name); len(ips) != len(ids) {
		t.Errorf("%s: host-local holds %v, want %d addresses", what, ips, len(ids))
	}
	// A veth whose netns went first disappears a moment later.
	var veths []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		veths = slices.DeleteFunc(n.files.Veths(t), func(v string) bool { return slices.Contains(n.hostVeths, v) })
		if len(veths) == len(ids) || time.Now().After(deadline) {
			break
		}
	}
	if len(veths) != len(ids) {
		t.Errorf("%s: veths on %s: %v, want %d", what, n.h.name, veths, len(ids))
	}
}

// assertNothingLeft checks that no trace of the removed containers ids is
// left: no container, no plugin cache file, no address in host-local's
// store, no veth, no portmap chain or rule, no libcni result, no netns
// (sandboxes are their paths).
func (n *podmanNet) assertNothingLeft(t *testing.T, what string, ids, sandboxes []string) {
	t.Helper()
	if out := n.pm.Must(t, "ps", "--all", "--quiet", "--no-trunc"); out != "" {
		t.Errorf("%s: containers left: %s", what, out)
	}
	n.assertAttached(t, what)
	nat := n.h.ns.MustExec(t, "iptables", "-w", "-t", "nat", "-S")
	if strings.Contains(nat, "-N CNI-DN-") {
		t.Errorf("%s: a portmap DNAT chain is left:\n%s", what, nat)
	}
	for _, id := range ids {
		if strings.Contains(nat, id) {
			t.Errorf("%s: an iptables rule still names container %s:\n%s", what, id, nat)
		}
	}
	if res := podmantest.CNIResults(t, n.name); len(res) != 0 {
		t.Errorf("%s: podman's libcni results left in %s: %v", what, podmantest.CNICacheDir, res)
	}
	for _, sb := range sandboxes {
		if _, err := os.Stat(sb); err == nil {
			t.Errorf("%s: the container's network namespace %s is left", what, sb)
		}
	}
}

func (n *podmanNet) sandbox(t *testing.T, ctr string) string {
	t.Helper()
	return n.pm.Must(t, "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", ctr)
}

// fetch gets the httpd page from addr:port over a socket made inside ns.
func fetch(ns *netnstest.NS, addr netip.Addr, port int) error {
	target := netip.AddrPortFrom(addr, uint16(port)).String()
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		// The socket belongs to the namespace it is created in.
		conn, err = net.DialTimeout("tcp", target, 2*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", target); err != nil {
		return err
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("reading from %s: %w", target, err)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.") || !strings.HasSuffix(string(resp), "\r\n\r\nweft-ok\n") {
		return fmt.Errorf("%s answered %q, want the page weft-ok", target, resp)
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestE2EPodman runs containers with podman (Debian's 4.3, CNI network
// backend, runc) through the flannel plugin on a host of a two-host
// cluster with weftd: a container started before the agent has written
// subnet.env fails with the plugin's message and leaves nothing; then
// containers get addresses in FLANNEL_SUBNET, reach a pod on the other host
// and are reached from it, a published port answers from the other host,
// and `network reload`, `disconnect`/`connect`, stop/start and `--ip` work;
// ten containers started at once get distinct addresses; and `podman rm -f`
// leaves no address, cache file, veth, portmap chain or libcni result.
func TestE2EPodman(t *testing.T) {
	t.Parallel()
	podmantest.Require(t)
	c := newCluster(t, 2, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 30*time.Second)
	bin := buildPlugins(t)
	h1, h2 := c.hosts[0], c.hosts[1]
	pm := podmantest.New(t, h1.ns, bin)
	n := newPodmanNet(t, pm, h1, bin, "1.0.0")
	img := podmantest.Image

	// Before the agent runs: no subnet.env.
	_, err := n.pm.Run("run", "--rm", "--name", "early", "--network", n.name, img, "true")
	if err == nil {
		t.Fatal("a container started before subnet.env exists ran")
	}
	for _, want := range []string{h1.envPath + " does not exist", "has not written it yet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("podman run without subnet.env failed without the plugin's message %q:\n%v", want, err)
		}
	}
	n.assertNothingLeft(t, "after the failed start", nil, nil)

	for _, h := range c.hosts {
		h.start()
	}
	env1, env2 := h1.waitReady(), h2.waitReady()
	pods2 := cnitest.Attach(t, h2.ns, bin, h2.envPath)
	pod := pods2.AddPod(t, pods2.StockConfList(t, "1.0.0"))
	if !env2.Subnet.Masked().Contains(pod.Addr.Addr()) {
		t.Fatalf("the pod on host2 got %s, not in %s", pod.Addr, env2.Subnet)
	}

	// A web server with a published port.
	const hostPort = 18080
	web := n.pm.Must(t, "run", "-d", "--name", "web", "--network", n.name, "-p", fmt.Sprintf("%d:80", hostPort),
		img, "httpd", "-f", "-p", "80", "-h", "/www")
	webAddr := n.addr(t, "web")
	checkAddr(t, "web", webAddr, env1)
	n.assertAttached(t, "web running", web)
	eventually(t, 10*time.Second, "the container on host1 reaches the pod on host2", func() error {
		_, err := n.pm.Run("exec", "web", "ping", "-c1", "-W1", pod.Addr.Addr().String())
		return err
	})
	eventually(t, 10*time.Second, "the pod on host2 reaches the container on host1", func() error {
		_, err := pod.Exec("ping", "-n", "-c1", "-W1", webAddr.String())
		return err
	})
	eventually(t, 10*time.Second, "host2 fetches the container's page through host1's published port", func() error {
		return fetch(h2.ns, h1.addr, hostPort)
	})

	// network reload: podman tears the attachment down and sets it up
	// again (the cache is rewritten, the port mapping restored).
	n.pm.Must(t, "network", "reload", "web")
	n.assertAttached(t, "after network reload", web)
	eventually(t, 10*time.Second, "the published port after network reload", func() error { return fetch(h2.ns, h1.addr, hostPort) })

	// disconnect releases everything; connect attaches again.
	n.pm.Must(t, "network", "disconnect", n.name, "web")
	n.assertAttached(t, "after network disconnect")
	n.pm.Must(t, "network", "connect", n.name, "web")
	checkAddr(t, "web after connect", n.addr(t, "web"), env1)
	n.assertAttached(t, "after network connect", web)

	// stop releases everything; start attaches again.
	n.pm.Must(t, "stop", "--time", "0", "web")
	n.assertAttached(t, "after stop")
	n.pm.Must(t, "start", "web")
	webAddr = n.addr(t, "web")
	checkAddr(t, "web after start", webAddr, env1)
	n.assertAttached(t, "after start", web)
	eventually(t, 10*time.Second, "the published port after stop and start", func() error { return fetch(h2.ns, h1.addr, hostPort) })
	eventually(t, 10*time.Second, "the pod on host2 reaches the restarted container", func() error {
		_, err := pod.Exec("ping", "-n", "-c1", "-W1", webAddr.String())
		return err
	})

	// --ip: host-local takes the address the runtime asks for.
	fixed := env1.Subnet.Masked().Addr()
	for range 200 {
		fixed = fixed.Next()
	}
	out := n.pm.Must(t, "run", "--rm", "--network", n.name, "--ip", fixed.String(), img, "ip", "-4", "-o", "addr", "show", "eth0")
	if want := fmt.Sprintf("inet %s/%d", fixed, env1.Subnet.Bits()); !strings.Contains(out, want) {
		t.Errorf("--ip %s: the container has %q, want %q", fixed, out, want)
	}

	// rm -f leaves nothing.
	sb := n.sandbox(t, "web")
	n.pm.Must(t, "rm", "--force", "--time", "0", "web")
	n.assertNothingLeft(t, "after rm -f of web", []string{web}, []string{sb})

	// Ten at once.
	const parallel = 10
	ids := make([]string, parallel)
	errs := make([]error, parallel)
	var wg sync.WaitGroup
	for i := range parallel {
		wg.Go(func() {
			out, err := n.pm.Run("run", "-d", "--name", fmt.Sprintf("par%d", i), "--network", n.name, img, "sleep", "600")
			ids[i], errs[i] = strings.TrimSpace(out), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("ten parallel podman run: %v", err)
	}
	seen := map[netip.Addr]string{}
	var sandboxes []string
	for i := range parallel {
		name := fmt.Sprintf("par%d", i)
		a := n.addr(t, name)
		checkAddr(t, name, a, env1)
		if other, dup := seen[a]; dup {
			t.Errorf("%s and %s both got %s", other, name, a)
		}
		seen[a] = name
		sandboxes = append(sandboxes, n.sandbox(t, name))
	}
	n.assertAttached(t, "ten running", ids...)
	n.pm.Must(t, append([]string{"rm", "--force", "--time", "0"}, ids...)...)
	n.assertNothingLeft(t, "after rm -f of the ten", ids, sandboxes)

	// Timings, sequential: podman run of a container that exits at once
	// (--rm: ADD and DEL included), and run -d then rm -f.
	const rounds = 5
	var runs, starts, rms []time.Duration
	for range rounds {
		t0 := time.Now()
		n.pm.Must(t, "run", "--rm", "--network", n.name, img, "true")
		runs = append(runs, time.Since(t0))
		t0 = time.Now()
		id := n.pm.Must(t, "run", "-d", "--network", n.name, img, "sleep", "600")
		starts = append(starts, time.Since(t0))
		t0 = time.Now()
		n.pm.Must(t, "rm", "--force", "--time", "0", id)
		rms = append(rms, time.Since(t0))
	}
	// The same plugins through plain libcni on host2, for scale.
	list2 := pods2.StockConfList(t, "1.0.0")
	var adds, dels []time.Duration
	for range rounds {
		p := pods2.NewPod(t)
		t0 := time.Now()
		if err := pods2.Add(list2, p); err != nil {
			t.Fatal(err)
		}
		adds = append(adds, time.Since(t0))
		t0 = time.Now()
		if err := pods2.Del(list2, p); err != nil {
			t.Fatal(err)
		}
		dels = append(dels, time.Since(t0))
	}
	ms := func(ds []time.Duration) time.Duration { return median(ds).Round(time.Millisecond) }
	t.Logf("timings, median of %d: podman run --rm true %s, podman run -d %s, podman rm -f %s; libcni ADD %s, DEL %s (same conflist)",
		rounds, ms(runs), ms(starts), ms(rms), ms(adds), ms(dels))
	n.assertNothingLeft(t, "after the timing rounds", nil, nil)

	// cniVersion 1.1.0 (GC and STATUS): podman 4.3's libcni cannot read
	// the result and rolls the ADD back; Documentation/cni.md says so.
	n11 := newPodmanNet(t, pm, h1, bin, "1.1.0")
	_, err = pm.Run("run", "--rm", "--network", n11.name, img, "true")
	if err == nil || !strings.Contains(err.Error(), `unsupported CNI result version "1.1.0"`) {
		t.Errorf("podman 4.3 with a cniVersion 1.1.0 network: %v, want the failure Documentation/cni.md describes", err)
	}
	n11.assertNothingLeft(t, "after the rolled-back 1.1.0 ADD", nil, nil)

	// The node is being torn down: the agent is gone, subnet.env and the
	// plugin's cache file of a running container are deleted. rm -f still
	// frees its address and veth (DEL with a placeholder range).
	last := n.pm.Must(t, "run", "-d", "--network", n.name, img, "sleep", "600")
	sb = n.sandbox(t, last)
	n.assertAttached(t, "before the teardown", last)
	h1.kill()
	for _, f := range []string{h1.envPath, filepath.Join(n.files.DataDir, last)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	n.pm.Must(t, "rm", "--force", "--time", "0", last)
	n.assertNothingLeft(t, "after rm -f without subnet.env and cache", []string{last}, []string{sb})
}

func checkAddr(t *testing.T, what string, a netip.Addr, env *subnetenv.Env) {
	t.Helper()
	if !env.Subnet.Masked().Contains(a) || a == env.Subnet.Addr() {
		t.Errorf("%s: address %s is not a pod address in FLANNEL_SUBNET %s", what, a, env.Subnet)
	}
}
