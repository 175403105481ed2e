package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

const dualConfig = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":%s}`
const v6Config = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":%s}`

// peer6 returns host i's dual-stack lease (v4only: without its IPv6 part),
// its IPv6 part being subnet fd00:10:244:i::/64 and PublicIPv6
// 2001:db8::(100+i), with a VtepMAC derived as a weft node derives it.
func peer6(i int, v4only bool) subnet.Lease {
	l := peer(i, false)
	if v4only {
		return l
	}
	ip := netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 100+i))
	data, _ := json.Marshal(BackendData{VNI: 1, VtepMAC: VtepMAC(ip, 1).String()})
	l.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i))
	l.Attrs.PublicIPv6 = &ip
	l.Attrs.BackendV6Data = data
	return l
}

// v6only strips a lease to its IPv6 part, as an IPv6-only node's.
func v6only(l subnet.Lease) subnet.Lease {
	l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData = netip.Prefix{}, netip.Addr{}, nil
	return l
}

func newRig6(t testing.TB, fake *netlinkx.Fake, configJSON, backendJSON string) *rig {
	t.Helper()
	if fake == nil {
		fake = netlinkx.NewFake()
		fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	}
	eth0, err := fake.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := subnet.ParseConfig([]byte(fmt.Sprintf(configJSON, backendJSON)))
	if err != nil {
		t.Fatal(err)
	}
	ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500}
	own := subnet.Lease{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
	if cfg.EnableIPv4 {
		ext.Addr = netip.MustParseAddr("192.168.0.1")
		ext.PublicIP = ext.Addr
		own.Subnet = netip.MustParsePrefix("10.244.1.0/24")
	}
	ext.Addr6 = netip.MustParseAddr("2001:db8::1")
	ext.PublicIPv6 = ext.Addr6
	b, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: fake, VerifyEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.LeaseAttrs(&own.Attrs); err != nil {
		t.Fatal(err)
	}
	return &rig{fake: fake, b: b, own: own}
}

const goldenDual = `addr eth0 192.168.0.1/24
addr eth0 2001:db8::1/64
addr flannel-v6.1 fd00:10:244:1::/128
addr flannel.1 10.244.1.0/32
addr lo 127.0.0.1/8
fdb 32:68:b3:48:e0:71 dev flannel.1 dst 192.168.0.102
fdb 66:8a:c0:cc:e5:6b dev flannel-v6.1 dst 2001:db8::103
fdb 9e:29:1e:2b:1d:d3 dev flannel-v6.1 dst 2001:db8::102
fdb ae:09:26:b0:79:4d dev flannel.1 dst 192.168.0.103
fdb fe:1d:c6:1e:3a:69 dev flannel.1 dst 192.168.0.104
link eth0 veth mtu 1500 mac 02:ee:00:00:00:02 up
link flannel-v6.1 vxlan mtu 1430 mac 8a:e4:ac:36:ee:d7 up vni 1 port 8472 local 2001:db8::1 dev eth0 nolearning
link flannel.1 vxlan mtu 1450 mac ba:15:a1:b0:12:6b up vni 1 port 8472 local 192.168.0.1 dev eth0 nolearning
link lo device mtu 65536 mac 00:00:00:00:00:00 up
neigh 10.244.2.0 dev flannel.1 lladdr 32:68:b3:48:e0:71 permanent
neigh 10.244.3.0 dev flannel.1 lladdr ae:09:26:b0:79:4d permanent
neigh 10.244.4.0 dev flannel.1 lladdr fe:1d:c6:1e:3a:69 permanent
neigh fd00:10:244:2:: dev flannel-v6.1 lladdr 9e:29:1e:2b:1d:d3 permanent
neigh fd00:10:244:3:: dev flannel-v6.1 lladdr 66:8a:c0:cc:e5:6b permanent
route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink
route 192.168.0.0/24 dev eth0
route 2001:db8::/64 dev eth0
route fd00:10:244:1::/128 dev flannel-v6.1
route fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink
route fd00:10:244:3::/64 via fd00:10:244:3:: dev flannel-v6.1 onlink
`

// TestDualStackGolden: both devices, flanneld's entries per family (COMPAT-
// WAVE2 2.5), an IPv4-only peer in IPv4 only, the MTUs, and a peer with a
// bad IPv6 part skipped in IPv6 with its IPv4 entries kept, named once.
func TestDualStackGolden(t *testing.T) {
	r := newRig6(t, nil, dualConfig, `{"Type":"vxlan"}`)
	if r.b.MTU() != 1430 {
		t.Errorf("MTU() = %d, want 1430: VXLAN over IPv6 costs 70 bytes", r.b.MTU())
	}
	bad := peer6(6, false)
	ll := netip.MustParseAddr("fe80::6")
	bad.Attrs.PublicIPv6 = &ll
	badMAC := peer6(7, false)
	badMAC.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`)
	bad.Subnet, badMAC.Subnet = netip.MustParsePrefix("10.244.6.0/24"), netip.MustParsePrefix("10.244.7.0/24")
	// The bad peers' IPv4 parts are good: the store would not let them
	// through, but the backend must not trust that.
	err := r.set(t, []subnet.Lease{peer6(3, false), bad, peer6(2, false), peer6(4, true), badMAC})
	if err == nil || !strings.Contains(err.Error(), "10.244.6.0-24&fd00:10:244:6::-64 (PublicIPv6 fe80::6): not a unicast IPv6 address") ||
		!strings.Contains(err.Error(), "10.244.7.0-24&fd00:10:244:7::-64 (PublicIPv6 2001:db8::107): BackendV6Data: BackendData VtepMAC ff:ff:ff:ff:ff:ff is not a non-zero unicast address") {
		t.Errorf("Set error = %v, want both bad IPv6 parts named", err)
	}
	got := r.fake.Dump()
	// The bad peers' IPv4 entries are there; drop them to compare.
	var lines []string
	for _, l := range strings.Split(got, "\n") {
		if !strings.Contains(l, "10.244.6.") && !strings.Contains(l, "10.244.7.") && !strings.Contains(l, "192.168.0.106") && !strings.Contains(l, "192.168.0.107") {
			lines = append(lines, l)
		}
	}
	if g := strings.Join(lines, "\n"); g != goldenDual {
		t.Errorf("dump:\n%s\nwant:\n%s", g, goldenDual)
	}
	if n := strings.Count(got, "10.244.6.0/24 via 10.244.6.0 dev flannel.1 onlink") + strings.Count(got, "10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink"); n != 2 {
		t.Errorf("the bad IPv6 peers lost their IPv4 routes:\n%s", got)
	}
	var a subnet.LeaseAttrs
	if err := r.b.LeaseAttrs(&a); err != nil {
		t.Fatal(err)
	}
	if string(a.BackendData) != `{"VNI":1,"VtepMAC":"ba:15:a1:b0:12:6b"}` || string(a.BackendV6Data) != `{"VNI":1,"VtepMAC":"8a:e4:ac:36:ee:d7"}` {
		t.Errorf("lease data %s / %s", a.BackendData, a.BackendV6Data)
	}
	// Idempotent: the same state writes nothing.
	w := r.fake.Writes()
	_ = r.set(t, []subnet.Lease{peer6(2, false), peer6(3, false), peer6(4, true), bad, badMAC})
	if r.fake.Writes() != w {
		t.Errorf("the same state wrote %d entries", r.fake.Writes()-w)
	}
}

// TestDualStackSelfHeal: the IPv6 device deleted, or one IPv6 entry, comes
// back at the next Set (flanneld never recreates flannel-v6.<VNI>), with the
// same MAC.
func TestDualStackSelfHeal(t *testing.T) {
	r := newRig6(t, nil, dualConfig, `{"Type":"vxlan"}`)
	peers := []subnet.Lease{peer6(2, false), peer6(3, false)}
	if err := r.set(t, peers); err != nil {
		t.Fatal(err)
	}
	want := r.fake.Dump()
	for _, breakIt := range []func() error{
		func() error { l, _ := r.fake.LinkByName("flannel-v6.1"); return r.fake.DeleteLink(l.Index) },
		func() error {
			return r.fake.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("fd00:10:244:2::/64")})
		},
		func() error {
			l, _ := r.fake.LinkByName("flannel-v6.1")
			return r.fake.DeleteNeigh(netlinkx.Neigh{LinkIndex: l.Index, IP: netip.MustParseAddr("fd00:10:244:3::")})
		},
	} {
		if err := breakIt(); err != nil {
			t.Fatal(err)
		}
		r.b.Resync()
		if err := r.set(t, peers); err != nil {
			t.Fatal(err)
		}
		if got := r.fake.Dump(); got != want {
			t.Errorf("after repair:\n%s\nwant:\n%s", got, want)
		}
	}
}

// TestIPv6OnlyBackend: an IPv6-only network has flannel-v6.<VNI> only and
// advertises BackendV6Data only.
func TestIPv6OnlyBackend(t *testing.T) {
	r := newRig6(t, nil, v6Config, `{"Type":"vxlan"}`)
	if err := r.set(t, []subnet.Lease{v6only(peer6(2, false))}); err != nil {
		t.Fatal(err)
	}
	got := r.fake.Dump()
	if strings.Contains(got, "flannel.1") || !strings.Contains(got, "route fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink") ||
		!strings.Contains(got, "fdb 9e:29:1e:2b:1d:d3 dev flannel-v6.1 dst 2001:db8::102") {
		t.Errorf("dump:\n%s", got)
	}
	var a subnet.LeaseAttrs
	if err := r.b.LeaseAttrs(&a); err != nil || a.BackendData != nil || len(a.BackendV6Data) == 0 || r.b.MTU() != 1430 {
		t.Errorf("lease data %s / %s, MTU %d, %v", a.BackendData, a.BackendV6Data, r.b.MTU(), err)
	}
}

// TestDualStackDirectRouting: an IPv6 peer on the underlay's IPv6 subnet
// gets a plain route via its PublicIPv6.
func TestDualStackDirectRouting(t *testing.T) {
	r := newRig6(t, nil, dualConfig, `{"Type":"vxlan","DirectRouting":true}`)
	far := peer6(3, false)
	fip := netip.MustParseAddr("2001:db9::103")
	far.Attrs.PublicIPv6 = &fip
	if err := r.set(t, []subnet.Lease{peer6(2, false), far}); err != nil {
		t.Fatal(err)
	}
	got := r.fake.Dump()
	for _, want := range []string{
		"route fd00:10:244:2::/64 via 2001:db8::102 dev eth0",
		"route fd00:10:244:3::/64 via fd00:10:244:3:: dev flannel-v6.1 onlink",
		"route 10.244.2.0/24 via 192.168.0.102 dev eth0",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "neigh fd00:10:244:2::") {
		t.Errorf("a direct peer has tunnel entries:\n%s", got)
	}
}

// TestAdoptIPv6Device: an existing flannel-v6.<VNI> that carries the data
// plane as configured is adopted with its MAC (flanneld's, on a node
// switching to Weft); one with another local address is recreated.
func TestAdoptIPv6Device(t *testing.T) {
	fake := netlinkx.NewFake()
	eth0 := fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	mac := netlinkx.MAC{0x0a, 0x58, 0, 0, 0, 6}
	if _, err := fake.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel-v6.1", MTU: 1450, MAC: mac,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: netip.MustParseAddr("2001:db8::1"), VtepDevIndex: eth0.Index}}); err != nil {
		t.Fatal(err)
	}
	r := newRig6(t, fake, dualConfig, `{"Type":"vxlan"}`)
	l, _ := fake.LinkByName("flannel-v6.1")
	if r.b.VtepMACv6() != mac || l.MAC != mac || l.MTU != 1430 || !l.Up {
		t.Errorf("adopted device %+v, backend MAC %s; want MAC %s kept, MTU 1430, up", l, r.b.VtepMACv6(), mac)
	}

	fake2 := netlinkx.NewFake()
	eth0 = fake2.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	if _, err := fake2.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel-v6.1", MTU: 1450, MAC: mac,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: netip.MustParseAddr("2001:db8::99"), VtepDevIndex: eth0.Index}}); err != nil {
		t.Fatal(err)
	}
	r2 := newRig6(t, fake2, dualConfig, `{"Type":"vxlan"}`)
	l, _ = fake2.LinkByName("flannel-v6.1")
	if l.VXLAN.Local != netip.MustParseAddr("2001:db8::1") || l.MAC == mac || r2.b.VtepMACv6() != l.MAC {
		t.Errorf("incompatible device not recreated: %+v %+v", l, l.VXLAN)
	}
}

// TestIncrementalMatchesScratchDualStack is TestIncrementalMatchesScratch
// in a dual-stack network, with the IPv6 parts varied on their own (IPv4-
// only peers, bad PublicIPv6, shared or bad IPv6 MACs, two leases claiming
// one IPv6 subnet with different IPv4 ones), the peers in random order:
// an incremental Set and a Set from scratch, given the set in another
// order, reach the same kernel state and the same errors.
func TestIncrementalMatchesScratchDualStack(t *testing.T) {
	variant := func(rng *rand.Rand, i int) subnet.Lease {
		p := peer6(i, false)
		switch rng.IntN(9) {
		case 0:
			p = peer6(i, true)
		case 1: // another node's IPv6 MAC
			p.Attrs.BackendV6Data = peer6(2+rng.IntN(6), false).Attrs.BackendV6Data
		case 2:
			ll := netip.MustParseAddr("fe80::1")
			p.Attrs.PublicIPv6 = &ll
		case 3:
			p.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"nope"}`)
		case 4: // claims another peer's IPv6 subnet
			p.IPv6Subnet = peer6(2+rng.IntN(8), false).IPv6Subnet
		}
		return p
	}
	for _, opts := range []string{`{"Type":"vxlan"}`, `{"Type":"vxlan","DirectRouting":true}`} {
		for seed := range uint64(10) {
			rng := rand.New(rand.NewPCG(seed, 11))
			r := newRig6(t, nil, dualConfig, opts)
			for step := range 12 {
				var ps []subnet.Lease
				for i := 2; i < 10; i++ {
					if rng.IntN(3) > 0 {
						ps = append(ps, variant(rng, i))
					}
				}
				rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
				errInc := r.set(t, ps)
				other := slices.Clone(ps)
				rng.Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
				fresh := newRig6(t, nil, dualConfig, opts)
				errScratch := fresh.set(t, other)
				if fmt.Sprint(errInc) != fmt.Sprint(errScratch) {
					t.Fatalf("%s seed %d step %d: error\n%v\nfrom scratch:\n%v", opts, seed, step, errInc, errScratch)
				}
				if got, want := r.fake.Dump(), fresh.fake.Dump(); got != want {
					t.Fatalf("%s seed %d step %d: state\n%s\nfrom scratch:\n%s", opts, seed, step, got, want)
				}
				fresh.b.Close()
			}
		}
	}
}
