package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/ops/teardown"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/cnitest"
)

const (
	// Nodes lease below 10.244.100.0 and fd00:10:244:64::, so that the
	// bad peers written above them never collide with a node.
	dualNetConf   = `{"Network":"10.244.0.0/16","SubnetMax":"10.244.100.0","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMax":"fd00:10:244:64::","Backend":{"Type":"%s"}}`
	v6OnlyNetConf = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"%s"}}`
)

// cniPod is a pod attached through the real flannel CNI plugin, with its
// address of each family.
type cniPod struct {
	h          *host
	pod        *cnitest.Pod
	addr4, ad6 netip.Addr
}

// newCluster6 is newCluster with an IPv6 underlay beside the IPv4 one (which
// keeps carrying etcd and /readyz): host i gets 2001:db8:77::<i>/64 on eth0.
func newCluster6(t *testing.T, n int, netConf string) *cluster {
	t.Helper()
	c := newCluster(t, n, netConf, 30*time.Second)
	for i, h := range c.hosts {
		h.ns.AddAddr(t, "eth0", netip.MustParsePrefix(fmt.Sprintf("2001:db8:77::%d/64", i+1)))
	}
	return c
}

// startCNIPods starts every host's agent, checks its subnet.env, and
// attaches one pod per host through the stock conflist.
func startCNIPods(t *testing.T, c *cluster, v4 bool, mtu int) ([]cniPod, map[*host]*subnetenv.Env) {
	t.Helper()
	bin := buildPlugins(t)
	for _, h := range c.hosts {
		h.start()
	}
	envs := map[*host]*subnetenv.Env{}
	var pods []cniPod
	for _, h := range c.hosts {
		env := h.waitReady()
		envs[h] = env
		raw, err := os.ReadFile(h.envPath)
		if err != nil {
			t.Fatal(err)
		}
		// flanneld's order and format (v0.28.9 pkg/subnet/subnet.go
		// WriteSubnetFile): v4 lines, v6 lines, MTU, IPMASQ. The v6
		// subnet may be the network's first (fd00:10:244::/64), as the
		// Kubernetes controller manager allocates it.
		want := `^FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:[0-9a-f:]*:1/64\nFLANNEL_MTU=` + fmt.Sprint(mtu) + `\nFLANNEL_IPMASQ=true\n$`
		if v4 {
			want = `^FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.\d+.1/24\n` + want[1:]
		}
		if !regexp.MustCompile(want).Match(raw) {
			t.Errorf("%s: subnet.env:\n%s\nwant to match %s", h.name, raw, want)
		}
		ch := cnitest.Attach(t, h.ns, bin, h.envPath)
		list := ch.StockConfList(t, "1.0.0")
		p := ch.AddPod(t, list)
		if err := ch.Check(list, p); err != nil {
			t.Errorf("%s: CHECK of a pod with an address of each family: %v", h.name, err)
		}
		if out, _ := p.Exec("cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(out) != fmt.Sprint(mtu) {
			t.Errorf("%s: pod MTU %s, want FLANNEL_MTU %d", h.name, strings.TrimSpace(out), mtu)
		}
		cp := cniPod{h: h, pod: p}
		for _, ipc := range p.Result.IPs {
			a, _ := netip.AddrFromSlice(ipc.Address.IP)
			if a.Unmap().Is4() {
				cp.addr4 = a.Unmap()
			} else {
				cp.ad6 = a
			}
		}
		if !env.IPv6Subnet.Masked().Contains(cp.ad6) || (v4 && !env.Subnet.Masked().Contains(cp.addr4)) || (!v4 && cp.addr4.IsValid()) {
			t.Fatalf("%s: pod addresses %v and %v, subnet.env %+v", h.name, cp.addr4, cp.ad6, env)
		}
		pods = append(pods, cp)
	}
	return pods, envs
}

// pingMatrix pings every pod from every other pod, in each family.
func pingMatrix(t *testing.T, pods []cniPod) {
	t.Helper()
	for _, a := range pods {
		for _, b := range pods {
			if a.pod == b.pod {
				continue
			}
			for _, dst := range []netip.Addr{b.addr4, b.ad6} {
				if !dst.IsValid() {
					continue
				}
				eventually(t, 10*time.Second, fmt.Sprintf("pod on %s reaches pod %s on %s", a.h.name, dst, b.h.name), func() error {
					_, err := a.pod.Exec("ping", "-n", "-c1", "-W1", dst.String())
					return err
				})
			}
		}
	}
}

// leaseKeys returns the keys under the subnets prefix with their values.
func leaseKeys(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	resp, err := c.etcd.Client().Get(context.Background(), "/coreos.com/network/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), "/coreos.com/network/subnets/")] = string(kv.Value)
	}
	return out
}

func TestE2EDualStack(t *testing.T) {
	t.Parallel()
	for _, be := range []string{"vxlan", "host-gw"} {
		t.Run(be, func(t *testing.T) {
			c := newCluster6(t, 3, fmt.Sprintf(dualNetConf, be))
			if be == "host-gw" {
				c.hosts = c.hosts[:2] // keep it short
			}
			pods, _ := startCNIPods(t, c, true, map[string]int{"vxlan": 1430, "host-gw": 1500}[be])
			pingMatrix(t, pods)
			keys := leaseKeys(t, c)
			dualKey := regexp.MustCompile(`^10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]+::-64$`)
			for k, v := range keys {
				if !dualKey.MatchString(k) || !strings.Contains(v, `"PublicIPv6":"2001:db8:77::`) {
					t.Errorf("lease %s = %s: not flanneld's dual-stack key and value", k, v)
				}
				if be == "vxlan" && !strings.Contains(v, `"BackendV6Data":{"VNI":1,"VtepMAC":"`) {
					t.Errorf("lease %s = %s has no BackendV6Data", k, v)
				}
			}
			if len(keys) != len(c.hosts) {
				t.Errorf("%d lease keys for %d hosts: %v", len(keys), len(c.hosts), keys)
			}
			if be != "vxlan" {
				return
			}
			for _, h := range c.hosts {
				out := h.ns.MustExec(t, "ip", "-d", "link", "show", "flannel-v6.1")
				if !strings.Contains(out, "mtu 1430") || !strings.Contains(out, "local 2001:db8:77::") || !strings.Contains(out, "nolearning") {
					t.Errorf("%s: flannel-v6.1:\n%s", h.name, out)
				}
			}
			selfHeal6(t, c, pods)
			restartUnderPing6(t, c, pods)
			badV6Peers(t, c, pods)
		})
	}
}

// selfHeal6 deletes an IPv6 route, neighbour and FDB entry and the IPv6
// device on host1 by hand; the running agent puts each back.
func selfHeal6(t *testing.T, c *cluster, pods []cniPod) {
	t.Helper()
	h1 := c.hosts[0]
	sn2 := netip.PrefixFrom(pods[1].ad6, 64).Masked()
	gw2 := sn2.Addr().String()
	mac2 := strings.TrimSpace(c.hosts[1].ns.MustExec(t, "cat", "/sys/class/net/flannel-v6.1/address"))
	for _, tc := range []struct {
		name         string
		vandal, show []string
		want         string
	}{
		{"route", []string{"ip", "-6", "route", "del", sn2.String()}, []string{"ip", "-6", "route", "show", sn2.String()}, "via " + gw2 + " dev flannel-v6.1"},
		{"neigh", []string{"ip", "-6", "neigh", "del", gw2, "dev", "flannel-v6.1"}, []string{"ip", "-6", "neigh", "show", "dev", "flannel-v6.1"}, gw2 + " lladdr " + mac2 + " PERMANENT"},
		{"fdb", []string{"bridge", "fdb", "del", mac2, "dev", "flannel-v6.1", "dst", "2001:db8:77::2"}, []string{"bridge", "fdb", "show", "dev", "flannel-v6.1"}, mac2 + " dst 2001:db8:77::2 self permanent"},
		{"device", []string{"ip", "link", "del", "flannel-v6.1"}, []string{"ip", "-6", "route", "show", sn2.String()}, "via " + gw2 + " dev flannel-v6.1"},
	} {
		h1.ns.MustExec(t, tc.vandal...)
		eventually(t, 10*time.Second, "host1's IPv6 "+tc.name+" restored", func() error {
			if out, _ := h1.ns.Exec(tc.show...); !strings.Contains(out, tc.want) {
				return fmt.Errorf("%q lacks %q", out, tc.want)
			}
			return nil
		})
	}
	pingMatrix(t, pods)
}

// restartUnderPing6 SIGKILLs host2's agent and starts it again while host1's
// pod pings host2's pod over IPv6 every 10 ms: no packet may be lost, and
// flannel-v6.1 keeps its index and MAC.
func restartUnderPing6(t *testing.T, c *cluster, pods []cniPod) {
	t.Helper()
	h2 := c.hosts[1]
	dev := func(f string) string {
		return strings.TrimSpace(h2.ns.MustExec(t, "cat", "/sys/class/net/flannel-v6.1/"+f))
	}
	mac, idx := dev("address"), dev("ifindex")
	envBefore, err := subnetenv.Read(h2.envPath)
	if err != nil {
		t.Fatal(err)
	}
	ping := exec.Command("ip", "netns", "exec", pods[0].pod.NSName, "ping", "-6", "-n", "-i", "0.01", "-c", "600", "-W", "1", pods[1].ad6.String())
	out := &strings.Builder{}
	ping.Stdout = out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	h2.kill()
	time.Sleep(300 * time.Millisecond)
	h2.start()
	env := h2.waitReady()
	if env.IPv6Subnet != envBefore.IPv6Subnet || env.Subnet != envBefore.Subnet {
		t.Errorf("host2 came back with %s/%s, had %s/%s", env.Subnet, env.IPv6Subnet, envBefore.Subnet, envBefore.IPv6Subnet)
	}
	if m, i := dev("address"), dev("ifindex"); m != mac || i != idx {
		t.Errorf("flannel-v6.1 changed across the restart: MAC %s -> %s, ifindex %s -> %s", mac, m, idx, i)
	}
	ping.Wait()
	tx, rx := pingCounts(t, out.String())
	t.Logf("ping6 across the restart: %d sent, %d received", tx, rx)
	if tx < 100 || rx != tx {
		t.Errorf("ping6 across host2's restart lost packets: %d sent, %d received\n%s", tx, rx, tail(out.String()))
	}
}

// badV6Peers writes peer leases whose IPv6 part is bad (a link-local
// PublicIPv6, a broadcast v6 MAC): each agent logs each once, and the pods
// still reach each other.
func badV6Peers(t *testing.T, c *cluster, pods []cniPod) {
	t.Helper()
	bad := map[string]string{
		"10.244.250.0-24&fd00:10:244:fa::-64": `{"PublicIP":"198.51.100.250","PublicIPv6":"fe80::250","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:fa"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:fa"}}`,
		"10.244.251.0-24&fd00:10:244:fb::-64": `{"PublicIP":"198.51.100.251","PublicIPv6":"2001:db8:77::251","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:fb"},"BackendV6Data":{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}}`,
	}
	ctx := context.Background()
	for k, v := range bad {
		if _, err := c.etcd.Client().Put(ctx, "/coreos.com/network/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	// A good change after them, so that every agent has read past them.
	if _, err := c.etcd.Client().Put(ctx, "/coreos.com/network/marker", "x"); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.hosts {
		for k := range bad {
			eventually(t, 10*time.Second, h.name+" logs "+k, func() error {
				b, _ := os.ReadFile(h.logPath)
				n := 0
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, `msg="skipping invalid lease"`) && strings.Contains(line, " key=/coreos.com/network/subnets/"+k+" ") {
						n++
					}
				}
				if n != 1 {
					return fmt.Errorf("logged %d times", n)
				}
				return nil
			})
		}
		if out := h.ns.MustExec(t, "ip", "-6", "route"); strings.Contains(out, "fd00:10:244:fa::") || strings.Contains(out, "fd00:10:244:fb::") {
			t.Errorf("%s programmed a bad peer:\n%s", h.name, out)
		}
	}
	pingMatrix(t, pods)
}

func TestE2EIPv6Only(t *testing.T) {
	t.Parallel()
	for _, be := range []string{"vxlan", "host-gw"} {
		t.Run(be, func(t *testing.T) {
			c := newCluster6(t, 3, fmt.Sprintf(v6OnlyNetConf, be))
			pods, envs := startCNIPods(t, c, false, map[string]int{"vxlan": 1430, "host-gw": 1500}[be])
			pingMatrix(t, pods)
			keys := leaseKeys(t, c)
			v6Key := regexp.MustCompile(`^0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$`)
			for k, v := range keys {
				if !v6Key.MatchString(k) || !strings.HasPrefix(v, `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:77::`) {
					t.Errorf("lease %s = %s: not flanneld's IPv6-only key and value", k, v)
				}
			}
			if len(keys) != 3 {
				t.Fatalf("%d lease keys for 3 hosts (IPv6-only nodes must not take each other's lease): %v", len(keys), keys)
			}
			// A restart takes the node's own lease back, not another's.
			h := c.hosts[2]
			h.kill()
			h.start()
			if env := h.waitReady(); env.IPv6Subnet != envs[h].IPv6Subnet {
				t.Errorf("%s came back with %s, had %s", h.name, env.IPv6Subnet, envs[h].IPv6Subnet)
			}
			if got := leaseKeys(t, c); len(got) != 3 {
				t.Errorf("keys after a restart: %v", got)
			}
			pingMatrix(t, pods)
		})
	}
}

// TestE2ENodeTeardownDualStack: the teardown of a dual-stack node releases
// its dual-stack key and removes both devices; the other node forgets both
// of its subnets.
func TestE2ENodeTeardownDualStack(t *testing.T) {
	t.Parallel()
	c := newCluster6(t, 2, fmt.Sprintf(dualNetConf, "vxlan"))
	pods, envs := startCNIPods(t, c, true, 1430)
	pingMatrix(t, pods)
	h1, h2 := c.hosts[0], c.hosts[1]
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	sn, sn6 := envs[h1].Subnet.Masked(), envs[h1].IPv6Subnet.Masked()
	var rep *teardown.Report
	if err := h1.ns.Do(func() (err error) {
		rep, err = teardown.Run(context.Background(), teardown.Options{Leases: etcdstore.NewWithClient(c.etcd.Client(), etcdstore.Options{}), SubnetFile: h1.envPath, PublicIP: h1.addr, KeepIPTables: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := sn.String() + " " + sn6.String(); strings.Join(rep.Released, " ") != want || !slices.Contains(rep.Links, "flannel.1") || !slices.Contains(rep.Links, "flannel-v6.1") {
		t.Errorf("teardown report %+v, want %s and %s released and both devices deleted", rep, sn, sn6)
	}
	if _, ok := leaseKeys(t, c)[subnet.SubnetKey(sn, sn6)]; ok {
		t.Errorf("the lease is still in etcd")
	}
	eventually(t, 5*time.Second, "host2 forgets host1's subnets", func() error {
		for _, p := range []netip.Prefix{sn, sn6} {
			if out, _ := h2.ns.Exec("ip", "route", "show", p.String()); strings.TrimSpace(out) != "" {
				return fmt.Errorf("route to %s still there: %s", p, out)
			}
		}
		return nil
	})
}

// TestE2ETurnIPv6On: an IPv4 cluster's config gains IPv6; a node restarted
// under it keeps its IPv4 subnet (flanneld renumbers it), its key becomes
// a dual-stack one in one transaction, and a 10 ms IPv4 ping from another
// node's pod to its pod loses nothing across the restart and the re-keying.
func TestE2ETurnIPv6On(t *testing.T) {
	t.Parallel()
	c := newCluster6(t, 2, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	envs := startAll(t, c)
	c.checkMesh()
	h1, h2 := c.hosts[0], c.hosts[1]
	if _, err := c.etcd.Client().Put(context.Background(), "/coreos.com/network/config", fmt.Sprintf(dualNetConf, "vxlan")); err != nil {
		t.Fatal(err)
	}
	ping := exec.Command("ip", "netns", "exec", h2.pod.Name, "ping", "-n", "-i", "0.01", "-c", "400", "-W", "1", h1.podAddr.String())
	out := &strings.Builder{}
	ping.Stdout = out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	h1.kill()
	h1.start()
	env := h1.waitReady()
	if env.Subnet != envs[h1].Subnet || !env.IPv6Subnet.IsValid() {
		t.Errorf("host1 under the dual-stack config: %s and %s, had %s", env.Subnet, env.IPv6Subnet, envs[h1].Subnet)
	}
	ping.Wait()
	tx, rx := pingCounts(t, out.String())
	t.Logf("IPv4 ping across turning IPv6 on: %d sent, %d received", tx, rx)
	if tx < 100 || rx != tx {
		t.Errorf("IPv4 ping lost packets: %d sent, %d received\n%s", tx, rx, tail(out.String()))
	}
	keys := leaseKeys(t, c)
	want1 := subnet.SubnetKey(env.Subnet.Masked(), env.IPv6Subnet.Masked())
	want2 := subnet.SubnetKey(envs[h2].Subnet.Masked(), netip.Prefix{})
	if _, ok := keys[want1]; !ok || len(keys) != 2 {
		t.Errorf("keys %v, want %s (host1, re-keyed) and %s (host2, not restarted)", keys, want1, want2)
	}
	if _, ok := keys[want2]; !ok {
		t.Errorf("keys %v lack host2's %s", keys, want2)
	}
	c.checkMesh()
}
