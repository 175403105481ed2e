package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// flanneldCounters is what the rules of a node prepared as flanneld leaves
// it start counting from: a rule that still counts from there afterwards was
// never rewritten.
const flanneldCounters = 1000000

// flanneldNode is a host prepared the way flanneld v0.28.9 (etcd mode,
// vxlan, -ip-masq) leaves it, with no flanneld binary: its device, address,
// entries to one peer, iptables chains, subnet.env and lease.
type flanneldNode struct {
	h      *host
	subnet netip.Prefix
	mac    string // flannel.1's random MAC, as flanneld takes it
	key    string // the lease key
	value  string // the lease value, byte for byte as flanneld writes it
	env    []byte // subnet.env as flanneld writes it
	lease  clientv3.LeaseID
}

// randomFlanneldMAC returns a MAC as flanneld makes one (pkg/mac): random,
// with the locally administered bit set and the multicast bit cleared.
func randomFlanneldMAC(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[0] = (b[0] &^ 0x01) | 0x02
	return net.HardwareAddr(b[:]).String()
}

// prepareFlanneld turns h into a node flanneld ran on, holding sn, with
// peer (a running weftd host) programmed.
func prepareFlanneld(t *testing.T, h *host, sn netip.Prefix, peer *host, peerSubnet netip.Prefix) *flanneldNode {
	t.Helper()
	c := h.c
	n := &flanneldNode{h: h, subnet: sn, mac: randomFlanneldMAC(t),
		key: "/coreos.com/network/subnets/" + strings.ReplaceAll(sn.String(), "/", "-")}
	peerMAC := linkMAC(t, peer.ns)
	gw := sn.Addr().String()
	peerGw := peerSubnet.Addr().String()
	// flanneld gives no dstport when the config has no Port: the kernel's
	// default, 8472.
	for _, cmd := range [][]string{
		{"ip", "link", "add", "flannel.1", "address", n.mac, "mtu", "1450", "type", "vxlan", "id", "1",
			"local", h.addr.String(), "dev", "eth0", "nolearning"},
		{"ip", "addr", "add", gw + "/32", "dev", "flannel.1"},
		{"ip", "link", "set", "flannel.1", "up"},
		{"ip", "neigh", "replace", peerGw, "dev", "flannel.1", "lladdr", peerMAC, "nud", "permanent"},
		{"bridge", "fdb", "replace", peerMAC, "dev", "flannel.1", "dst", peer.addr.String(), "self", "permanent"},
		{"ip", "route", "replace", peerSubnet.String(), "via", peerGw, "dev", "flannel.1", "onlink"},
	} {
		h.ns.MustExec(t, cmd...)
	}
	h.ns.EnableForwarding(t)
	// flanneld's chains (flannel v0.28.9, pkg/trafficmngr/iptables/iptables.go:
	// masqRules and forwardRules), each rule counting from
	// flanneldCounters.
	network := "10.244.0.0/16"
	ipt := func(table string, args ...string) {
		h.ns.MustExec(t, append([]string{"iptables", "-w", "-t", table}, args...)...)
	}
	masq := []string{"-m", "comment", "--comment", "flanneld masq"}
	fwd := []string{"-m", "comment", "--comment", "flanneld forward"}
	cnt := []string{"-c", strconv.Itoa(flanneldCounters), "0"}
	ipt("nat", "-N", "FLANNEL-POSTRTG")
	ipt("nat", append(append([]string{"-A", "POSTROUTING"}, masq...), "-j", "FLANNEL-POSTRTG")...)
	for _, r := range [][]string{
		{"-m", "mark", "--mark", "0x4000/0x4000"},
		{"-s", sn.String(), "-d", network},
		{"-s", network, "-d", sn.String()},
		{"!", "-s", network, "-d", sn.String()},
	} {
		ipt("nat", append(append(append(append([]string{"-A", "FLANNEL-POSTRTG"}, cnt...), r...), masq...), "-j", "RETURN")...)
	}
	for _, r := range [][]string{{"-s", network, "!", "-d", "224.0.0.0/4"}, {"!", "-s", network, "-d", network}} {
		ipt("nat", append(append(append(append([]string{"-A", "FLANNEL-POSTRTG"}, cnt...), r...), masq...), "-j", "MASQUERADE", "--random-fully")...)
	}
	ipt("filter", "-N", "FLANNEL-FWD")
	ipt("filter", append(append([]string{"-A", "FORWARD"}, fwd...), "-j", "FLANNEL-FWD")...)
	for _, r := range [][]string{{"-s", network}, {"-d", network}} {
		ipt("filter", append(append(append(append([]string{"-A", "FLANNEL-FWD"}, cnt...), r...), fwd...), "-j", "ACCEPT")...)
	}
	n.env = fmt.Appendf(nil, "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s/%d\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		network, sn.Addr().Next(), sn.Bits())
	if err := os.MkdirAll(filepath.Dir(h.envPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.envPath, n.env, 0o644); err != nil {
		t.Fatal(err)
	}
	// The lease: flanneld's value, bound to a 24-hour etcd lease.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := c.etcd.Client().Grant(ctx, 24*3600)
	if err != nil {
		t.Fatal(err)
	}
	n.lease = g.ID
	n.value = `{"PublicIP":"` + h.addr.String() + `","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + n.mac + `"}}`
	if _, err := c.etcd.Client().Put(ctx, n.key, n.value, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	h.addPod(&subnetenv.Env{Subnet: netip.PrefixFrom(sn.Addr().Next(), sn.Bits())})
	return n
}

// leaseKV reads the lease key: value, revision of its last change, etcd
// lease and that lease's remaining TTL.
func leaseKV(t *testing.T, c *cluster, key string) (value string, modRev int64, id clientv3.LeaseID, ttl int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.etcd.Client().Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("lease %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	kv := resp.Kvs[0]
	id = clientv3.LeaseID(kv.Lease)
	if id != 0 {
		tl, err := c.etcd.Client().TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		ttl = tl.TTL
	}
	return string(kv.Value), kv.ModRevision, id, ttl
}

// churn collects the netlink changes a namespace sees to the entries that
// matter (keep says which), from Subscribe until stop.
type churn struct {
	mu      sync.Mutex
	changes []string
	stop    func()
}

func watchChurn(t *testing.T, h *host, keep func(u netlinkx.Update) bool) *churn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := h.ns.Netlink(t).Subscribe(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &churn{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range ch {
			if u.Kind == netlinkx.LostUpdates && ctx.Err() == nil {
				w.add(fmt.Sprintf("updates lost: %v", u.Err))
			} else if u.Kind != netlinkx.LostUpdates && keep(u) {
				w.add(fmt.Sprintf("%+v", u))
			}
		}
	}()
	w.stop = func() { cancel(); <-done }
	t.Cleanup(w.stop)
	return w
}

func (w *churn) add(s string) {
	w.mu.Lock()
	w.changes = append(w.changes, s)
	w.mu.Unlock()
}

func (w *churn) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.changes...)
}

// touches reports whether u changes an entry on link idx, or (idx 0) one for
// the peer with subnet sn and public address ip.
func touches(u netlinkx.Update, idx int, sn netip.Prefix, ip netip.Addr) bool {
	switch u.Kind {
	case netlinkx.LinkUpdate:
		return u.Deleted && u.Link.Name == "flannel.1"
	case netlinkx.NeighUpdate:
		return (idx != 0 && u.Neigh.LinkIndex == idx && u.Neigh.Permanent) || (idx == 0 && u.Neigh.IP == sn.Addr())
	case netlinkx.FDBUpdate:
		return (idx != 0 && u.FDB.LinkIndex == idx) || (idx == 0 && u.FDB.Dst == ip)
	case netlinkx.RouteUpdate:
		return (idx != 0 && u.Route.LinkIndex == idx) || (idx == 0 && u.Route.Dst == sn)
	}
	return false
}

// flanneldWouldAdopt checks the device as flanneld's vxlanLinksIncompat
// does, and the settings flanneld would create it with: it would reuse it
// (MAC and all) rather than recreate it.
func flanneldWouldAdopt(t *testing.T, h *host) *netlink.Vxlan {
	t.Helper()
	nh, err := netlink.NewHandleAt(h.ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("flannel.1 gone: %v", err)
	}
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("flannel.1 is a %s, not vxlan", l.Type())
	}
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if v.VxlanId != 1 || v.VtepDevIndex != eth0.Attrs().Index || !v.SrcAddr.Equal(net.IP(h.addr.AsSlice())) ||
		len(v.Group) != 0 || v.L2miss || v.L3miss || (v.Port != 0 && v.Port != 8472) || v.GBP || v.Learning ||
		v.Attrs().MTU != 1450 || v.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("flannel.1 is not as flanneld would keep it: vni %d dev #%d (eth0 #%d) local %s group %v l2miss %t l3miss %t port %d gbp %t learning %t mtu %d flags %v",
			v.VxlanId, v.VtepDevIndex, eth0.Attrs().Index, v.SrcAddr, v.Group, v.L2miss, v.L3miss, v.Port, v.GBP, v.Learning, v.Attrs().MTU, v.Attrs().Flags)
	}
	return v
}

var counterRE = regexp.MustCompile(` -c (\d+) \d+`)

// iptablesState returns the rules of flanneld's chains on h and checks that
// each still counts from flanneldCounters (none was rewritten).
func iptablesState(t *testing.T, h *host) string {
	t.Helper()
	var b strings.Builder
	for _, tc := range [][2]string{{"nat", "POSTROUTING"}, {"nat", "FLANNEL-POSTRTG"}, {"filter", "FORWARD"}, {"filter", "FLANNEL-FWD"}} {
		out := h.ns.MustExec(t, "iptables", "-w", "-t", tc[0], "-S", tc[1], "-v")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			m := counterRE.FindStringSubmatch(line)
			if strings.HasPrefix(line, "-A FLANNEL-") {
				n := 0
				if m != nil {
					n, _ = strconv.Atoi(m[1])
				}
				if n < flanneldCounters {
					t.Errorf("%s: rule rewritten (its counter restarted): %s", h.name, line)
				}
			}
			line = counterRE.ReplaceAllString(line, "")
			fmt.Fprintf(&b, "%s %s\n", tc[0], line)
		}
	}
	return b.String()
}

// TestE2EMigrateFromFlanneld switches a node from flanneld to weftd under a
// ping every 10 ms, and back; then "reboots" it (device and subnet.env gone,
// lease kept) and starts weftd again. No packet may be lost, and nothing a
// peer holds for the node may change.
func TestE2EMigrateFromFlanneld(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 30*time.Second)
	h1, h2 := c.hosts[0], c.hosts[1]
	c.hosts = c.hosts[:1]
	env1 := startAll(t, c)[h1]
	c.hosts = append(c.hosts, h2)
	sn1 := env1.Subnet.Masked()
	sn2 := netip.MustParsePrefix("10.244.77.0/24")
	if sn1 == sn2 {
		sn2 = netip.MustParsePrefix("10.244.78.0/24")
	}
	fl := prepareFlanneld(t, h2, sn2, h1, sn1)
	eventually(t, 10*time.Second, "host1's pod reaches the flanneld node's pod", func() error { return h1.pod.Ping(h2.podAddr) })
	eventually(t, 10*time.Second, "the flanneld node's pod reaches host1's pod", func() error { return h2.pod.Ping(h1.podAddr) })

	mac, idx := linkMAC(t, h2.ns), linkIndex(t, h2.ns)
	if mac != fl.mac {
		t.Fatalf("prepared MAC %s, device has %s", fl.mac, mac)
	}
	_, rev, _, _ := leaseKV(t, c, fl.key)
	fdb1 := h1.ns.MustExec(t, "bridge", "fdb", "show", "dev", "flannel.1")
	neigh1 := h1.ns.MustExec(t, "ip", "neigh", "show", "dev", "flannel.1")
	if !strings.Contains(fdb1, fl.mac+" dst "+h2.addr.String()) {
		t.Fatalf("host1 has no FDB entry for the flanneld node's MAC %s:\n%s", fl.mac, fdb1)
	}
	ipt := iptablesState(t, h2)
	entries2 := func() string {
		return h2.ns.MustExec(t, "ip", "neigh", "show", "dev", "flannel.1") +
			h2.ns.MustExec(t, "bridge", "fdb", "show", "dev", "flannel.1") +
			h2.ns.MustExec(t, "ip", "route", "show", "10.244.0.0/16")
	}
	before2 := entries2()

	// Every change host1 sees to its entries for host2, and host2 to the
	// entries flanneld left on flannel.1.
	peerChurn := watchChurn(t, h1, func(u netlinkx.Update) bool { return touches(u, 0, sn2, h2.addr) })
	ownChurn := watchChurn(t, h2, func(u netlinkx.Update) bool { return touches(u, idx, sn2, h2.addr) })

	// flanneld is stopped (it leaves everything in place); weftd starts
	// while host1's pod pings host2's pod every 10 ms.
	ping := exec.Command("ip", "netns", "exec", h1.pod.Name, "ping", "-n", "-i", "0.01", "-c", "800", "-W", "1", h2.podAddr.String())
	pingOut := &strings.Builder{}
	ping.Stdout = pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // traffic flowing through flanneld's data plane first
	h2.start()
	env2 := h2.waitReady()
	if err := ping.Wait(); err != nil {
		t.Errorf("ping: %v", err)
	}
	peerChurn.stop()
	ownChurn.stop()
	tx, rx := pingCounts(t, pingOut.String())
	t.Logf("ping across the switch from flanneld to weftd: %d sent, %d received, %d lost", tx, rx, tx-rx)
	if tx < 700 || rx != tx {
		t.Errorf("switching from flanneld to weftd lost packets: %d sent, %d received\n%s", tx, rx, tail(pingOut.String()))
	}
	if env2.Subnet.Masked() != sn2 {
		t.Errorf("weftd took %s, flanneld held %s", env2.Subnet, sn2)
	}
	if got := linkMAC(t, h2.ns); got != fl.mac {
		t.Errorf("flannel.1's MAC changed: %s -> %s", fl.mac, got)
	}
	if got := linkIndex(t, h2.ns); got != idx {
		t.Errorf("flannel.1 was recreated: ifindex %d -> %d", idx, got)
	}
	if v, r, id, _ := leaseKV(t, c, fl.key); v != fl.value || r != rev || id != fl.lease {
		t.Errorf("weftd rewrote the lease: %s (revision %d, etcd lease %x), flanneld's was %s (revision %d, etcd lease %x)", v, r, id, fl.value, rev, fl.lease)
	}
	if got := h1.ns.MustExec(t, "bridge", "fdb", "show", "dev", "flannel.1"); got != fdb1 {
		t.Errorf("host1's FDB changed:\n%s\nwas:\n%s", got, fdb1)
	}
	if got := h1.ns.MustExec(t, "ip", "neigh", "show", "dev", "flannel.1"); got != neigh1 {
		t.Errorf("host1's neighbours changed:\n%s\nwas:\n%s", got, neigh1)
	}
	if ch := peerChurn.seen(); len(ch) > 0 {
		t.Errorf("host1's entries for host2 changed during the switch:\n%s", strings.Join(ch, "\n"))
	}
	if ch := ownChurn.seen(); len(ch) > 0 {
		t.Errorf("weftd rewrote entries flanneld left:\n%s", strings.Join(ch, "\n"))
	}
	if got := entries2(); got != before2 {
		t.Errorf("host2's entries changed:\n%s\nwas:\n%s", got, before2)
	}
	if got := iptablesState(t, h2); got != ipt {
		t.Errorf("iptables rules changed:\n%s\nwas:\n%s", got, ipt)
	}
	if b, err := os.ReadFile(h2.envPath); err != nil || string(b) != string(fl.env) {
		t.Errorf("subnet.env %q (%v), flanneld wrote %q", b, err, fl.env)
	}
	if log, _ := os.ReadFile(h2.logPath); !strings.Contains(string(log), "adopting the existing device with its MAC") {
		t.Errorf("weftd did not log the adoption:\n%s", tail(string(log)))
	}

	// Back: weftd stops. Nothing it leaves would make flanneld recreate
	// anything: the device as flanneld keeps it, with the same MAC; the
	// lease, same subnet and VtepMAC, bound to a live etcd lease; subnet.env
	// as flanneld wrote it.
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	v := flanneldWouldAdopt(t, h2)
	if v.Attrs().HardwareAddr.String() != fl.mac || v.Attrs().Index != idx {
		t.Errorf("after weftd stopped: flannel.1 #%d %s, flanneld's was #%d %s", v.Attrs().Index, v.Attrs().HardwareAddr, idx, fl.mac)
	}
	if out := h2.ns.MustExec(t, "ip", "-4", "addr", "show", "dev", "flannel.1"); !strings.Contains(out, "inet "+sn2.Addr().String()+"/32") {
		t.Errorf("flannel.1's address is not flanneld's %s/32:\n%s", sn2.Addr(), out)
	}
	if v, r, id, ttl := leaseKV(t, c, fl.key); v != fl.value || r != rev || id != fl.lease || ttl <= 0 {
		t.Errorf("after weftd stopped, lease %s = %s (revision %d, etcd lease %x, TTL %d), want flanneld's %s (revision %d) on a live etcd lease %x",
			fl.key, v, r, id, ttl, fl.value, rev, fl.lease)
	}
	if b, err := os.ReadFile(h2.envPath); err != nil || string(b) != string(fl.env) {
		t.Errorf("after weftd stopped, subnet.env %q (%v), flanneld wrote %q", b, err, fl.env)
	}
	if got := iptablesState(t, h2); got != ipt {
		t.Errorf("after weftd stopped, iptables rules:\n%s\nwas:\n%s", got, ipt)
	}
	if err := h1.pod.Ping(h2.podAddr); err != nil {
		t.Errorf("after weftd stopped, host1's pod no longer reaches host2's pod: %v", err)
	}

	// A reboot: the device, its entries and subnet.env (on tmpfs) are gone,
	// the lease is still held. weftd creates the device with the lease's
	// MAC, so the peers' entries stay right and the lease is not rewritten.
	peerChurn = watchChurn(t, h1, func(u netlinkx.Update) bool { return touches(u, 0, sn2, h2.addr) })
	h2.ns.MustExec(t, "ip", "link", "del", "flannel.1")
	if err := os.Remove(h2.envPath); err != nil {
		t.Fatal(err)
	}
	h2.start()
	env2 = h2.waitReady()
	if env2.Subnet.Masked() != sn2 {
		t.Errorf("after the reboot weftd took %s, the node held %s", env2.Subnet, sn2)
	}
	if got := linkMAC(t, h2.ns); got != fl.mac {
		t.Errorf("after the reboot flannel.1's MAC is %s, the lease's %s", got, fl.mac)
	}
	if v, r, _, _ := leaseKV(t, c, fl.key); v != fl.value || r != rev {
		t.Errorf("after the reboot the lease was rewritten: %s (revision %d), was %s (revision %d)", v, r, fl.value, rev)
	}
	eventually(t, 10*time.Second, "host1's pod reaches host2's pod after the reboot", func() error { return h1.pod.Ping(h2.podAddr) })
	peerChurn.stop()
	if ch := peerChurn.seen(); len(ch) > 0 {
		t.Errorf("host1's entries for host2 changed across host2's reboot:\n%s", strings.Join(ch, "\n"))
	}
	if log, _ := os.ReadFile(h2.logPath); !strings.Contains(string(log), "taking the VTEP MAC of this node's previous lease") {
		t.Errorf("weftd did not log taking the lease's MAC:\n%s", tail(string(log)))
	}
}
