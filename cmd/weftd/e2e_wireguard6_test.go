package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/test/netnstest"
	"golang.org/x/sys/unix"
)

// TestE2EWireGuardDualStack runs three dual-stack hosts on the wireguard
// backend (separate mode, the userspace engine) with pods attached through
// the real CNI plugin: flannel-wg (IPv4, UDP 51820, MTU 1440) and
// flannel-wg-v6 (IPv6, UDP 51821, MTU 1420) on each, every pod reaches
// every other in each family, the leases carry BackendV6Data with the same
// key and port 51821, and the underlay carries nothing between hosts but
// UDP to the WireGuard port of each family (and IPv6 neighbour discovery),
// with a pod-to-pod marker never in clear over either family. A host that
// leaves is removed from both devices.
func TestE2EWireGuardDualStack(t *testing.T) {
	t.Parallel()
	c := newCluster6(t, 3, fmt.Sprintf(dualNetConf, "wireguard"))
	keyFiles, sockDirs := map[*host]string{}, map[*host]string{}
	for _, h := range c.hosts {
		keyFiles[h], sockDirs[h] = wgHost(h)
	}
	// FLANNEL_MTU is the smaller device's: 1500 - 80.
	pods, envs := startCNIPods(t, c, true, 1420)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]

	// The devices, addresses, routes and leases.
	for _, h := range c.hosts {
		for dev, mtu := range map[string]string{"flannel-wg": "mtu 1440", "flannel-wg-v6": "mtu 1420"} {
			out := h.ns.MustExec(t, "ip", "-d", "link", "show", dev)
			if !strings.Contains(out, mtu) || !strings.Contains(out, "tun") || !strings.Contains(out, "persist") {
				t.Errorf("%s: %s is not a persistent TUN of %s:\n%s", h.name, dev, mtu, out)
			}
		}
		own6 := envs[h].IPv6Subnet.Masked().Addr().String() + "/128"
		if out := h.ns.MustExec(t, "ip", "-6", "addr", "show", "dev", "flannel-wg-v6"); !strings.Contains(out, own6) {
			t.Errorf("%s: flannel-wg-v6 lacks %s:\n%s", h.name, own6, out)
		}
		if out := h.ns.MustExec(t, "ip", "-6", "route", "show", "fd00:10:244::/56"); !strings.Contains(out, "dev flannel-wg-v6") {
			t.Errorf("%s: IPv6 network route = %q", h.name, out)
		}
		if out := h.ns.MustExec(t, "ip", "route", "show", "10.244.0.0/16"); !strings.Contains(out, "dev flannel-wg scope link") {
			t.Errorf("%s: IPv4 network route = %q", h.name, out)
		}
	}
	keys := leaseKeys(t, c)
	dualKey := regexp.MustCompile(`^10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]+::-64$`)
	pubs := map[string]bool{}
	for _, h := range c.hosts {
		pubs[publicKeyOf(t, keyFiles[h])] = true
	}
	for k, v := range keys {
		a, err := subnet.ParseLeaseAttrs([]byte(v))
		if err != nil || !dualKey.MatchString(k) {
			t.Errorf("lease %s = %s: %v", k, v, err)
			continue
		}
		var d4, d6 struct {
			PublicKey string
			Port      int
			Engine    string
		}
		if err := json.Unmarshal(a.BackendData, &d4); err != nil {
			t.Errorf("lease %s BackendData %s: %v", k, a.BackendData, err)
		}
		if err := json.Unmarshal(a.BackendV6Data, &d6); err != nil {
			t.Errorf("lease %s BackendV6Data %s: %v", k, a.BackendV6Data, err)
		}
		if !pubs[d4.PublicKey] || d6.PublicKey != d4.PublicKey || d4.Port != 51820 || d6.Port != 51821 || d6.Engine != "userspace" ||
			!strings.HasPrefix(a.IPv6().String(), "2001:db8:77::") {
			t.Errorf("lease %s = %s: want the same key in both data, ports 51820 and 51821, PublicIPv6 on the underlay", k, v)
		}
	}
	if len(keys) != 3 {
		t.Fatalf("%d lease keys for 3 hosts: %v", len(keys), keys)
	}
	for _, h := range c.hosts {
		eventually(t, 10*time.Second, h.name+"'s flannel-wg-v6 has the two peers' IPv6 subnets", func() error {
			peers, err := wgDevPeers(sockDirs[h], "flannel-wg-v6")
			if err != nil {
				return err
			}
			var got []string
			for _, ips := range peers {
				got = append(got, ips...)
			}
			slices.Sort(got)
			var want []string
			for _, o := range c.hosts {
				if o != h {
					want = append(want, envs[o].IPv6Subnet.Masked().String())
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				return fmt.Errorf("allowed IPs %v, want %v", got, want)
			}
			return nil
		})
	}

	// Every pod reaches every other, over IPv4 and IPv6.
	pingMatrix(t, pods)

	// The capture. Controls first: a marker sent in clear over the
	// underlay is seen, over each family.
	marker := []byte("WEFT-SECRET-v6x1") // 16 bytes: ping -p's largest pattern
	pattern := hex.EncodeToString(marker)
	h1v6 := hostV6(h1)
	ctl := h1.ns.Capture(t, "eth0")
	h2.ns.MustExec(t, "ping", "-n", "-c2", "-i", "0.2", "-s", "120", "-p", pattern, h1.addr.String())
	h2.ns.MustExec(t, "ping", "-6", "-n", "-c2", "-i", "0.2", "-s", "120", "-p", pattern, h1v6.String())
	frames, err := ctl.Stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []uint16{unix.ETH_P_IP, unix.ETH_P_IPV6} {
		if !slices.ContainsFunc(frames, func(f []byte) bool {
			return len(f) > 14 && uint16(f[12])<<8|uint16(f[13]) == fam && bytes.Contains(f, marker)
		}) {
			t.Fatalf("control: a marker pinged in clear over the underlay (ethertype %#x) was not captured (%d frames)", fam, len(frames))
		}
	}

	hostAddr := map[netip.Addr]bool{}
	for _, h := range c.hosts {
		hostAddr[h.addr] = true
		hostAddr[hostV6(h)] = true
	}
	var caps []*netnstest.Capture
	for _, h := range c.hosts {
		caps = append(caps, h.ns.Capture(t, "eth0"))
	}
	for _, pair := range [][2]cniPod{{pods[0], pods[1]}, {pods[1], pods[2]}, {pods[2], pods[0]}} {
		for _, dst := range []netip.Addr{pair[1].addr4, pair[1].ad6} {
			if out, err := pair[0].pod.Exec("ping", "-n", "-c3", "-i", "0.1", "-s", "120", "-p", pattern, dst.String()); err != nil {
				t.Errorf("marker ping %s -> %s: %v\n%s", pair[0].h.name, dst, err, out)
			}
		}
	}
	tunnelled := map[bool]int{}
	total := 0
	for i, cp := range caps {
		frames, err := cp.Stop()
		if err != nil {
			t.Fatal(err)
		}
		total += len(frames)
		var bad []string
		for _, f := range frames {
			if bytes.Contains(f, marker) {
				t.Errorf("%s's underlay carried the pod-to-pod marker in clear: % x", c.hosts[i].name, f)
			}
			p, ok := netnstest.ParseIP(f)
			if !ok || !hostAddr[p.Src] || !hostAddr[p.Dst] {
				continue // not between hosts (etcd and health checks go to the bridge)
			}
			six := p.Src.Is6()
			port := map[bool]int{false: 51820, true: 51821}[six]
			if six && p.Proto == unix.IPPROTO_ICMPV6 && len(f) > 14+40 && (f[14+40] == 135 || f[14+40] == 136) {
				continue // neighbour solicitation and advertisement
			}
			if p.Proto != unix.IPPROTO_UDP || p.SrcPort != port || p.DstPort != port {
				bad = append(bad, p.String())
				continue
			}
			tunnelled[six]++
		}
		if len(bad) > 0 {
			t.Errorf("%s's underlay carried traffic between hosts other than WireGuard's UDP 51820 (IPv4) and 51821 (IPv6): %v", c.hosts[i].name, bad)
		}
	}
	t.Logf("capture: %d frames on the hosts' underlay links; WireGuard between hosts: %d over IPv4 (UDP 51820), %d over IPv6 (UDP 51821)",
		total, tunnelled[false], tunnelled[true])
	for _, six := range []bool{false, true} {
		if tunnelled[six] < 18 {
			t.Errorf("only %d WireGuard frames between hosts over IPv6=%v for 9 pings each way", tunnelled[six], six)
		}
	}

	// A SIGKILLed and restarted agent re-opens both persistent TUNs with
	// the same key: the same lease, and both families reach it again
	// within the stated window, measured by a ping every 10 ms over each
	// device from host1's pod to host2's.
	before := leaseKeys(t, c)
	var from, to cniPod
	for _, p := range pods {
		switch p.h {
		case h1:
			from = p
		case h2:
			to = p
		}
	}
	interval := 10 * time.Millisecond
	var pings [2]*exec.Cmd
	var outs [2]*strings.Builder
	for i, dst := range []netip.Addr{to.addr4, to.ad6} {
		pings[i] = exec.Command("ip", "netns", "exec", from.pod.NSName, "ping", "-n", "-i", "0.01", "-c", "500", "-W", "1", dst.String())
		outs[i] = &strings.Builder{}
		pings[i].Stdout = outs[i]
		if err := pings[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	h2.kill()
	h2.start()
	h2.waitReady()
	readyAfter := time.Since(killed)
	allowed := max(restartLossWindow, readyAfter+500*time.Millisecond) // as in TestE2EWireGuard
	for i, dev := range []string{"flannel-wg (IPv4)", "flannel-wg-v6 (IPv6)"} {
		pings[i].Wait()
		tx, rx := pingCounts(t, outs[i].String())
		loss := time.Duration(tx-rx) * interval
		t.Logf("SIGKILL and restart of host2's agent, ready again after %s: over %s %d sent, %d received, loss window %s (allowed %s)",
			readyAfter.Round(time.Millisecond), dev, tx, rx, loss, allowed.Round(time.Millisecond))
		if tx < 300 || loss > allowed {
			t.Errorf("ping over %s across the restart lost %d of %d packets (%s), more than the %s allowed\n%s", dev, tx-rx, tx, loss, allowed.Round(time.Millisecond), tail(outs[i].String()))
		}
	}
	if after := leaseKeys(t, c); !maps.Equal(after, before) {
		t.Errorf("leases changed across host2's restart:\n%v\nwas\n%v", after, before)
	}
	pingMatrix(t, pods)

	// host3 leaves: its agent killed and its lease deleted. The others
	// remove it from both devices; host1 and host2 still reach each other.
	var key3 string
	for k := range keys {
		if strings.HasPrefix(k, envs[h3].Subnet.Masked().Addr().String()+"-") {
			key3 = k
		}
	}
	h3.kill()
	if _, err := c.etcd.Client().Delete(context.Background(), "/coreos.com/network/subnets/"+key3); err != nil {
		t.Fatal(err)
	}
	pub3 := publicKeyOf(t, keyFiles[h3])
	for _, h := range []*host{h1, h2} {
		eventually(t, 10*time.Second, h.name+" removes host3 from both devices", func() error {
			for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
				peers, err := wgDevPeers(sockDirs[h], dev)
				if err != nil {
					return err
				}
				if _, ok := peers[pub3]; ok || len(peers) != 1 {
					return fmt.Errorf("%s peers %v", dev, peers)
				}
			}
			return nil
		})
	}
	pingMatrix(t, pods[:2])
}

// TestE2EWireGuardIPv6Only: two IPv6-only hosts on the wireguard backend:
// flannel-wg-v6 is the only device, the lease has BackendV6Data only, and
// the pods reach each other.
func TestE2EWireGuardIPv6Only(t *testing.T) {
	t.Parallel()
	c := newCluster6(t, 2, fmt.Sprintf(v6OnlyNetConf, "wireguard"))
	for _, h := range c.hosts {
		wgHost(h)
	}
	pods, _ := startCNIPods(t, c, false, 1420)
	pingMatrix(t, pods)
	for _, h := range c.hosts {
		if out, err := h.ns.Exec("ip", "link", "show", "flannel-wg"); err == nil {
			t.Errorf("%s: an IPv6-only node has flannel-wg: %s", h.name, out)
		}
		if out := h.ns.MustExec(t, "ip", "-6", "route", "show", "fd00:10:244::/56"); !strings.Contains(out, "dev flannel-wg-v6") {
			t.Errorf("%s: IPv6 network route = %q", h.name, out)
		}
	}
	for k, v := range leaseKeys(t, c) {
		a, err := subnet.ParseLeaseAttrs([]byte(v))
		if err != nil || len(a.BackendData) != 0 || !strings.Contains(string(a.BackendV6Data), `"Port":51821,"Engine":"userspace"`) {
			t.Errorf("lease %s = %s (%v): want BackendV6Data only", k, v, err)
		}
	}
}

// hostV6 is the IPv6 underlay address newCluster6 gives host h.
func hostV6(h *host) netip.Addr {
	for i, o := range h.c.hosts {
		if o == h {
			return netip.MustParseAddr(fmt.Sprintf("2001:db8:77::%d", i+1))
		}
	}
	panic("host not in its cluster")
}

// TestE2EWireGuardSingleTunnel: a dual-stack network in each single-tunnel
// Mode ("ipv6", "ipv4", "auto"): one flannel-wg on ListenPort carries both
// families (no flannel-wg-v6), its peers at their address of the mode's
// family; pods reach each other in both families, and between hosts the
// underlay carries only UDP 51820 over that family (and IPv6 neighbour
// discovery), with a pod-to-pod marker never in clear.
func TestE2EWireGuardSingleTunnel(t *testing.T) {
	t.Parallel()
	// The hosts' IPv4 addresses (198.19.x.y) are not private, so auto
	// picks IPv4 for every peer, as flanneld's selectMode does.
	// The device's MTU leaves room for IPv6 encapsulation (80 bytes) but
	// in ipv4, where every endpoint is IPv4 (60).
	for _, tc := range []struct {
		mode string
		six  bool // the endpoints' family
		mtu  int
	}{{"ipv6", true, 1420}, {"ipv4", false, 1440}, {"auto", false, 1420}} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			t.Parallel()
			testSingleTunnel(t, tc.mode, tc.six, tc.mtu)
		})
	}
}

// testSingleTunnel runs two dual-stack hosts with one WireGuard device in
// Mode mode, whose endpoints are of the family six says, and pods at mtu.
func testSingleTunnel(t *testing.T, mode string, six bool, mtu int) {
	conf := strings.Replace(fmt.Sprintf(dualNetConf, "wireguard"), `{"Type":"wireguard"}`, `{"Type":"wireguard","Mode":"`+mode+`"}`, 1)
	c := newCluster6(t, 2, conf)
	for _, h := range c.hosts {
		wgHost(h)
	}
	pods, _ := startCNIPods(t, c, true, mtu)
	pingMatrix(t, pods)
	for _, h := range c.hosts {
		if out, err := h.ns.Exec("ip", "link", "show", "flannel-wg-v6"); err == nil {
			t.Errorf("%s: a single-tunnel node has flannel-wg-v6: %s", h.name, out)
		}
		if out := h.ns.MustExec(t, "ip", "-6", "route", "show", "fd00:10:244::/56"); !strings.Contains(out, "dev flannel-wg") {
			t.Errorf("%s: IPv6 network route = %q", h.name, out)
		}
	}
	for k, v := range leaseKeys(t, c) {
		if !strings.Contains(v, `"BackendV6Data":{"PublicKey":"`) || !strings.Contains(v, `"Port":51820,"Engine":"userspace"},"BackendV6Data"`) ||
			strings.Contains(v, "51821") {
			t.Errorf("lease %s = %s: want the one device's port 51820 in both data", k, v)
		}
	}

	marker := []byte("WEFT-SECRET-st01")
	pattern := hex.EncodeToString(marker)
	hostAddr := map[netip.Addr]bool{}
	for _, h := range c.hosts {
		hostAddr[h.addr] = true
		hostAddr[hostV6(h)] = true
	}
	var caps []*netnstest.Capture
	for _, h := range c.hosts {
		caps = append(caps, h.ns.Capture(t, "eth0"))
	}
	for _, pair := range [][2]cniPod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		for _, dst := range []netip.Addr{pair[1].addr4, pair[1].ad6} {
			if out, err := pair[0].pod.Exec("ping", "-n", "-c3", "-i", "0.1", "-s", "120", "-p", pattern, dst.String()); err != nil {
				t.Errorf("marker ping %s -> %s: %v\n%s", pair[0].h.name, dst, err, out)
			}
		}
	}
	tunnelled := 0
	for i, cp := range caps {
		frames, err := cp.Stop()
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for _, f := range frames {
			if bytes.Contains(f, marker) {
				t.Errorf("%s's underlay carried the pod-to-pod marker in clear: % x", c.hosts[i].name, f)
			}
			p, ok := netnstest.ParseIP(f)
			if !ok || !hostAddr[p.Src] || !hostAddr[p.Dst] {
				continue
			}
			if p.Src.Is6() && p.Proto == unix.IPPROTO_ICMPV6 && len(f) > 14+40 && (f[14+40] == 135 || f[14+40] == 136) {
				continue
			}
			if p.Src.Is6() != six || p.Proto != unix.IPPROTO_UDP || p.SrcPort != 51820 || p.DstPort != 51820 {
				bad = append(bad, p.String())
				continue
			}
			tunnelled++
		}
		if len(bad) > 0 {
			t.Errorf("%s's underlay carried traffic between hosts other than WireGuard's UDP 51820 over %s: %v", c.hosts[i].name, family(six), bad)
		}
	}
	t.Logf("capture: %d WireGuard frames between hosts, all UDP 51820 over %s, for pod traffic of both families", tunnelled, family(six))
	if tunnelled < 24 {
		t.Errorf("only %d WireGuard frames between hosts for 12 pings", tunnelled)
	}
}

// family names the IP version six says.
func family(six bool) string {
	if six {
		return "IPv6"
	}
	return "IPv4"
}
