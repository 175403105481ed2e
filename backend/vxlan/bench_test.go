package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/netnstest"
)

// The benchmarks program n peers into a fresh namespace, once with the
// backend and once with ip -batch / bridge -batch (the baseline the issue's
// targets refer to), and report CPU seconds per operation beside the wall
// time: cpu-s/op counts this process (the backend, including the kernel's
// work in its netlink calls) or the ip and bridge children.

const benchNetwork = `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

var benchOwn = netip.MustParsePrefix("10.255.255.0/24")

func benchPeer(i int) subnet.Lease {
	sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	ip := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
	data, _ := json.Marshal(BackendData{VNI: 1, VtepMAC: VtepMAC(ip, 1).String()})
	return subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: ip, BackendType: TypeName, BackendData: data}}
}

func benchPeers(n int) []subnet.Lease {
	ps := make([]subnet.Lease, n)
	for i := range ps {
		ps[i] = benchPeer(i + 1)
	}
	return ps
}

// benchHost creates a fresh namespace with an underlay link eth0
// (192.168.0.1/24, one end of a veth pair).
func benchHost(b *testing.B) *netnstest.NS {
	b.Helper()
	ns := netnstest.NewNS(b, "bench")
	ns.MustExec(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ns.MustExec(b, "ip", "addr", "add", "192.168.0.1/24", "dev", "eth0")
	ns.MustExec(b, "ip", "link", "set", "eth0", "up")
	ns.MustExec(b, "ip", "link", "set", "eth1", "up")
	return ns
}

// cpuClock accumulates the CPU time (user+system) of this process and of
// its waited-for children between start and stop.
type cpuClock struct {
	self, children time.Duration
	s0, c0         time.Duration
}

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) start() {
	c.s0, c.c0 = rusage(syscall.RUSAGE_SELF), rusage(syscall.RUSAGE_CHILDREN)
}

func (c *cpuClock) stop() {
	c.self += rusage(syscall.RUSAGE_SELF) - c.s0
	c.children += rusage(syscall.RUSAGE_CHILDREN) - c.c0
}

// benchDualNetwork is benchNetwork with IPv6 on.
const benchDualNetwork = `{"Network":"10.0.0.0/8","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`

var benchOwn6 = netip.MustParsePrefix("fd00:0:0:ffff::/64")

// benchDualPeers is benchPeers with an IPv6 part each: the IPv6 subnets in
// another order than the IPv4 ones (as independent random allocation
// leaves them), PublicIPv6 in 2001:db8::/64 (the underlay's IPv6 subnet).
func benchDualPeers(n int) []subnet.Lease {
	ps := benchPeers(n)
	for i := range ps {
		j := (i + 1) * 7919 % 65536
		ip6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(j >> 8), 15: byte(j)})
		data, _ := json.Marshal(BackendData{VNI: 1, VtepMAC: VtepMAC(ip6, 1).String()})
		ps[i].IPv6Subnet = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(j >> 8), byte(j)}), 64)
		ps[i].Attrs.PublicIPv6 = &ip6
		ps[i].Attrs.BackendV6Data = data
	}
	return ps
}

func benchProgram(b *testing.B, n int) { benchProgramFamilies(b, n, false) }

func benchProgramFamilies(b *testing.B, n int, dual bool) {
	netnstest.SkipUnlessRoot(b)
	network, peers, own := benchNetwork, benchPeers(n), subnet.Lease{Subnet: benchOwn}
	if dual {
		network, peers, own = benchDualNetwork, benchDualPeers(n), subnet.Lease{Subnet: benchOwn, IPv6Subnet: benchOwn6}
	}
	cfg, _, err := subnet.ParseConfig([]byte(network))
	if err != nil {
		b.Fatal(err)
	}
	var clk cpuClock
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ns := benchHost(b)
		nl := ns.Netlink(b)
		eth0, err := nl.LinkByName("eth0")
		if err != nil {
			b.Fatal(err)
		}
		addr := netip.MustParseAddr("192.168.0.1")
		ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr}
		if dual {
			ns.AddAddr(b, "eth0", netip.MustParsePrefix("2001:db8::1/64"))
			ext.Addr6, ext.PublicIPv6 = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::1")
		}
		b.StartTimer()
		clk.start()
		be, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: nl})
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Set(context.Background(), backend.State{Own: own, Peers: peers}); err != nil {
			b.Fatal(err)
		}
		clk.stop()
		b.StopTimer()
		be.Close()
		if out := ns.MustExec(b, "sh", "-c", "ip route show dev flannel.1 | wc -l"); strings.TrimSpace(out) != fmt.Sprint(n) {
			b.Fatalf("%s routes on flannel.1, want %d", strings.TrimSpace(out), n)
		}
		if out := ns.MustExec(b, "sh", "-c", "ip -6 route show dev flannel-v6.1 | grep -c onlink || true"); dual && strings.TrimSpace(out) != fmt.Sprint(n) {
			b.Fatalf("%s IPv6 routes on flannel-v6.1, want %d", strings.TrimSpace(out), n)
		}
		b.StartTimer()
	}
	b.ReportMetric(clk.self.Seconds()/float64(b.N), "cpu-s/op")
}

func benchIPBatch(b *testing.B, n int) { benchIPBatchFamilies(b, n, false) }

func benchIPBatchFamilies(b *testing.B, n int, dual bool) {
	netnstest.SkipUnlessRoot(b)
	peers := benchPeers(n)
	if dual {
		peers = benchDualPeers(n)
	}
	dir := b.TempDir()
	var ipb, routes, fdb strings.Builder
	fmt.Fprintf(&ipb, "link add flannel.1 address %s mtu 1450 type vxlan id 1 local 192.168.0.1 dev eth0 dstport 8472 nolearning\n", VtepMAC(netip.MustParseAddr("192.168.0.1"), 1))
	fmt.Fprintf(&ipb, "address add %s/32 dev flannel.1\nlink set flannel.1 up\n", benchOwn.Addr())
	if dual {
		fmt.Fprintf(&ipb, "address add 2001:db8::1/64 dev eth0 nodad\n")
		fmt.Fprintf(&ipb, "link add flannel-v6.1 address %s mtu 1430 type vxlan id 1 local 2001:db8::1 dev eth0 dstport 8472 nolearning\n", VtepMAC(netip.MustParseAddr("2001:db8::1"), 1))
		fmt.Fprintf(&ipb, "address add %s/128 dev flannel-v6.1\nlink set flannel-v6.1 up\n", benchOwn6.Addr())
	}
	for _, p := range peers {
		var d BackendData
		_ = json.Unmarshal(p.Attrs.BackendData, &d)
		fmt.Fprintf(&ipb, "neigh replace %s dev flannel.1 lladdr %s nud permanent\n", p.Subnet.Addr(), d.VtepMAC)
		fmt.Fprintf(&fdb, "fdb append %s dev flannel.1 dst %s self permanent\n", d.VtepMAC, p.Attrs.PublicIP)
		fmt.Fprintf(&routes, "route replace %s via %s dev flannel.1 onlink\n", p.Subnet, p.Subnet.Addr())
		if dual {
			var d6 BackendData
			_ = json.Unmarshal(p.Attrs.BackendV6Data, &d6)
			fmt.Fprintf(&ipb, "neigh replace %s dev flannel-v6.1 lladdr %s nud permanent\n", p.IPv6Subnet.Addr(), d6.VtepMAC)
			fmt.Fprintf(&fdb, "fdb append %s dev flannel-v6.1 dst %s self permanent\n", d6.VtepMAC, p.Attrs.IPv6())
			fmt.Fprintf(&routes, "route replace %s via %s dev flannel-v6.1 onlink\n", p.IPv6Subnet, p.IPv6Subnet.Addr())
		}
	}
	files := map[string]string{"ip1": ipb.String(), "fdb": fdb.String(), "ip2": routes.String()}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	var clk cpuClock
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ns := benchHost(b)
		b.StartTimer()
		clk.start()
		for _, cmd := range [][]string{
			{"ip", "-n", ns.Name, "-batch", filepath.Join(dir, "ip1")},
			{"bridge", "-n", ns.Name, "-batch", filepath.Join(dir, "fdb")},
			{"ip", "-n", ns.Name, "-batch", filepath.Join(dir, "ip2")},
		} {
			if _, err := netnstest.Run(cmd...); err != nil {
				b.Fatal(err)
			}
		}
		clk.stop()
		b.StopTimer()
		if out := ns.MustExec(b, "sh", "-c", "ip route show dev flannel.1 | wc -l"); strings.TrimSpace(out) != fmt.Sprint(n) {
			b.Fatalf("%s routes on flannel.1, want %d", strings.TrimSpace(out), n)
		}
		b.StartTimer()
	}
	b.ReportMetric(clk.children.Seconds()/float64(b.N), "cpu-s/op")
}

// BenchmarkProgram1000 programs 1,000 peers into a fresh namespace with the
// backend (device creation included).
func BenchmarkProgram1000(b *testing.B) { benchProgram(b, 1000) }

// BenchmarkProgram5000 programs 5,000 peers into a fresh namespace.
func BenchmarkProgram5000(b *testing.B) { benchProgram(b, 5000) }

// BenchmarkIPBatch1000 is the baseline for BenchmarkProgram1000: the same
// device, neighbours, FDB entries and routes by ip -batch and bridge -batch.
func BenchmarkIPBatch1000(b *testing.B) { benchIPBatch(b, 1000) }

// BenchmarkIPBatch5000 is the baseline for BenchmarkProgram5000.
func BenchmarkIPBatch5000(b *testing.B) { benchIPBatch(b, 5000) }

// BenchmarkProgramDualStack5000 programs 5,000 dual-stack peers (both
// devices, six entries per peer) into a fresh namespace.
func BenchmarkProgramDualStack5000(b *testing.B) { benchProgramFamilies(b, 5000, true) }

// BenchmarkIPBatchDualStack5000 is the baseline for
// BenchmarkProgramDualStack5000: the same devices and entries by ip -batch
// and bridge -batch.
func BenchmarkIPBatchDualStack5000(b *testing.B) { benchIPBatchFamilies(b, 5000, true) }

// BenchmarkOneChange5000 adds or removes one peer with 5,000 present: one
// Set per operation, alternating.
func BenchmarkOneChange5000(b *testing.B) {
	netnstest.SkipUnlessRoot(b)
	cfg, _, err := subnet.ParseConfig([]byte(benchNetwork))
	if err != nil {
		b.Fatal(err)
	}
	ns := benchHost(b)
	nl := ns.Netlink(b)
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	addr := netip.MustParseAddr("192.168.0.1")
	ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr}
	be, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: nl, VerifyEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	with := benchPeers(5001)
	without := with[:5000]
	own := subnet.Lease{Subnet: benchOwn}
	if err := be.Set(context.Background(), backend.State{Own: own, Peers: without}); err != nil {
		b.Fatal(err)
	}
	// Let the echoes of the initial programming pass, then settle.
	time.Sleep(200 * time.Millisecond)
	if err := be.Set(context.Background(), backend.State{Own: own, Peers: without}); err != nil {
		b.Fatal(err)
	}
	var clk cpuClock
	b.ResetTimer()
	clk.start()
	for i := range b.N {
		ps := without
		if i%2 == 0 {
			ps = with
		}
		if err := be.Set(context.Background(), backend.State{Own: own, Peers: ps}); err != nil {
			b.Fatal(err)
		}
	}
	clk.stop()
	b.ReportMetric(clk.self.Seconds()/float64(b.N), "cpu-s/op")
}

// BenchmarkOneChangeDualStack5000 is BenchmarkOneChange5000 in a dual-stack
// network: 5,000 peers with an IPv4 and an IPv6 subnet each, the IPv6
// subnets in another order than the IPv4 ones (as independent random
// allocation leaves them), one peer added or removed per Set.
func BenchmarkOneChangeDualStack5000(b *testing.B) {
	netnstest.SkipUnlessRoot(b)
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/8","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		b.Fatal(err)
	}
	ns := benchHost(b)
	ns.AddAddr(b, "eth0", netip.MustParsePrefix("2001:db8::1/64"))
	nl := ns.Netlink(b)
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	addr, addr6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("2001:db8::1")
	ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr, Addr6: addr6, PublicIPv6: addr6}
	be, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: nl, VerifyEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	with := benchDualPeers(5001)
	without := with[:5000]
	own := subnet.Lease{Subnet: benchOwn, IPv6Subnet: benchOwn6}
	if err := be.Set(context.Background(), backend.State{Own: own, Peers: without}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := be.Set(context.Background(), backend.State{Own: own, Peers: without}); err != nil {
		b.Fatal(err)
	}
	var clk cpuClock
	b.ResetTimer()
	clk.start()
	for i := range b.N {
		ps := without
		if i%2 == 0 {
			ps = with
		}
		if err := be.Set(context.Background(), backend.State{Own: own, Peers: ps}); err != nil {
			b.Fatal(err)
		}
	}
	clk.stop()
	b.ReportMetric(clk.self.Seconds()/float64(b.N), "cpu-s/op")
}
