package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

func mustConfig(t testing.TB, backendJSON string) *subnet.Config {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":` + backendJSON + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// peer returns the lease of host i: subnet 10.244.i.0/24, PublicIP
// 192.168.0.(100+i) (or 172.16.0.(100+i) when far), VtepMAC derived as a
// weft node derives it.
func peer(i int, far bool) subnet.Lease {
	ip := netip.AddrFrom4([4]byte{192, 168, 0, byte(100 + i)})
	if far {
		ip = netip.AddrFrom4([4]byte{172, 16, 0, byte(100 + i)})
	}
	data, _ := json.Marshal(BackendData{VNI: 1, VtepMAC: VtepMAC(ip, 1).String()})
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: ip, BackendType: "vxlan", BackendData: data},
	}
}

type rig struct {
	fake *netlinkx.Fake
	b    *Backend
	own  subnet.Lease
}

func newRig(t testing.TB, fake *netlinkx.Fake, backendJSON string) *rig {
	t.Helper()
	if fake == nil {
		fake = netlinkx.NewFake()
		fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"))
	}
	eth0, err := fake.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("192.168.0.1")
	b, err := New(context.Background(), backend.Params{
		Config: mustConfig(t, backendJSON),
		Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr},
	}, Config{Netlink: fake, VerifyEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: addr}}
	return &rig{fake: fake, b: b, own: own}
}

func (r *rig) set(t testing.TB, peers []subnet.Lease) error {
	t.Helper()
	return r.b.Set(context.Background(), backend.State{Own: r.own, Peers: peers})
}

const golden = `addr eth0 192.168.0.1/24
addr flannel.1 10.244.1.0/32
addr lo 127.0.0.1/8
fdb 32:68:b3:48:e0:71 dev flannel.1 dst 192.168.0.102
fdb 6e:a9:74:e4:0d:f5 dev flannel.1 dst 192.168.0.105
fdb ae:09:26:b0:79:4d dev flannel.1 dst 192.168.0.103
link eth0 veth mtu 1500 mac 02:ee:00:00:00:02 up
link flannel.1 vxlan mtu 1450 mac ba:15:a1:b0:12:6b up vni 1 port 8472 local 192.168.0.1 dev eth0 nolearning
link lo device mtu 65536 mac 00:00:00:00:00:00 up
neigh 10.244.2.0 dev flannel.1 lladdr 32:68:b3:48:e0:71 permanent
neigh 10.244.3.0 dev flannel.1 lladdr ae:09:26:b0:79:4d permanent
neigh 10.244.5.0 dev flannel.1 lladdr 6e:a9:74:e4:0d:f5 permanent
route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
route 10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink
route 192.168.0.0/24 dev eth0
`

// TestStates applies random sequences of peer sets, each in a random order,
// and checks that the final kernel state depends only on the final set.
func TestStates(t *testing.T) {
	final := []subnet.Lease{peer(2, false), peer(3, false), peer(5, false)}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			r := newRig(t, nil, `{"Type":"vxlan"}`)
			for range 6 {
				var ps []subnet.Lease
				for i := 2; i < 9; i++ {
					if rng.IntN(2) == 0 {
						p := peer(i, false)
						if rng.IntN(4) == 0 { // a node that rebooted under flanneld: new MAC
							p.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:%02x"}`, i))
						}
						ps = append(ps, p)
					}
				}
				if err := r.set(t, ps); err != nil {
					t.Fatal(err)
				}
			}
			ps := append([]subnet.Lease(nil), final...)
			rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
			if err := r.set(t, ps); err != nil {
				t.Fatal(err)
			}
			if got := r.fake.Dump(); got != golden {
				t.Errorf("state after seed %d:\n%s\nwant:\n%s", seed, got, golden)
			}
			// An idle Set with the same state writes nothing.
			w := r.fake.Writes()
			if err := r.set(t, ps); err != nil {
				t.Fatal(err)
			}
			if r.fake.Writes() != w {
				t.Errorf("idle Set wrote %d entries", r.fake.Writes()-w)
			}
		})
	}
}

func TestBadPeersSkipped(t *testing.T) {
	good := []subnet.Lease{peer(2, false), peer(3, false), peer(5, false)}
	bogusIP := peer(6, false)
	bogusIP.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1")
	badData := peer(7, false)
	badData.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"nope"}`)
	wrongVNI := peer(8, false)
	wrongVNI.Attrs.BackendData = json.RawMessage(`{"VNI":2,"VtepMAC":"02:00:00:00:00:01"}`)
	outside := peer(9, false)
	outside.Subnet = netip.MustParsePrefix("10.99.9.0/24")
	sameMAC := peer(10, false)
	sameMAC.Attrs.BackendData = good[0].Attrs.BackendData
	noData := peer(11, false)
	noData.Attrs.BackendData = nil
	bad := []subnet.Lease{bogusIP, badData, wrongVNI, outside, sameMAC, noData}

	r := newRig(t, nil, `{"Type":"vxlan"}`)
	err := r.set(t, append(append([]subnet.Lease(nil), bad...), good...))
	if err == nil {
		t.Fatal("Set with bad peers returned no error")
	}
	for _, p := range bad {
		if !strings.Contains(err.Error(), p.Key()) {
			t.Errorf("error does not name bad peer %s:\n%v", p.Key(), err)
		}
	}
	if got := r.fake.Dump(); got != golden {
		t.Errorf("bad peers changed the state:\n%s\nwant:\n%s", got, golden)
	}
}

func TestMACChangeRemovesStale(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	p := peer(2, false)
	if err := r.set(t, []subnet.Lease{p}); err != nil {
		t.Fatal(err)
	}
	p.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"02:11:22:33:44:55"}`)
	if err := r.set(t, []subnet.Lease{p}); err != nil {
		t.Fatal(err)
	}
	d := r.fake.Dump()
	if strings.Contains(d, VtepMAC(p.Attrs.PublicIP, 1).String()) {
		t.Errorf("stale MAC remains:\n%s", d)
	}
	for _, want := range []string{"neigh 10.244.2.0 dev flannel.1 lladdr 02:11:22:33:44:55 permanent", "fdb 02:11:22:33:44:55 dev flannel.1 dst 192.168.0.102"} {
		if !strings.Contains(d, want) {
			t.Errorf("missing %q in\n%s", want, d)
		}
	}
}

func waitChange(t *testing.T, b *Backend) {
	t.Helper()
	select {
	case <-b.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("Changes did not fire")
	}
}

func TestSelfHeal(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	ps := []subnet.Lease{peer(2, false), peer(3, false), peer(5, false)}
	if err := r.set(t, ps); err != nil {
		t.Fatal(err)
	}
	// Drain the notifications of our own device creation.
	select {
	case <-r.b.Changes():
	case <-time.After(50 * time.Millisecond):
	}
	if err := r.set(t, ps); err != nil {
		t.Fatal(err)
	}
	link, _ := r.fake.LinkByName("flannel.1")
	for name, vandal := range map[string]func() error{
		"route": func() error {
			return r.fake.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.244.3.0/24")})
		},
		"neigh": func() error {
			return r.fake.DeleteNeigh(netlinkx.Neigh{LinkIndex: link.Index, IP: netip.MustParseAddr("10.244.2.0")})
		},
		"fdb": func() error {
			ip := netip.MustParseAddr("192.168.0.105")
			return r.fake.DeleteFDB(netlinkx.FDB{LinkIndex: link.Index, MAC: VtepMAC(ip, 1), Dst: ip})
		},
		"device": func() error { return r.fake.DeleteLink(link.Index) },
	} {
		t.Run(name, func(t *testing.T) {
			link, _ = r.fake.LinkByName("flannel.1")
			if err := vandal(); err != nil {
				t.Fatal(err)
			}
			// A notification may be left over from the previous case;
			// like the agent, call Set on each until the state is back.
			for deadline := time.Now().Add(5 * time.Second); r.fake.Dump() != golden; {
				if time.Now().After(deadline) {
					t.Fatalf("not healed:\n%s\nwant:\n%s", r.fake.Dump(), golden)
				}
				waitChange(t, r.b)
				if err := r.set(t, ps); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestDeviceReuse(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	if err := r.set(t, []subnet.Lease{peer(2, false)}); err != nil {
		t.Fatal(err)
	}
	before, _ := r.fake.LinkByName("flannel.1")
	r.b.Close()
	w := r.fake.Writes()
	r2 := newRig(t, r.fake, `{"Type":"vxlan"}`)
	if err := r2.set(t, []subnet.Lease{peer(2, false)}); err != nil {
		t.Fatal(err)
	}
	after, _ := r.fake.LinkByName("flannel.1")
	if after.Index != before.Index {
		t.Errorf("device recreated: index %d, was %d", after.Index, before.Index)
	}
	if r.fake.Writes() != w {
		t.Errorf("restart with the same peers wrote %d entries", r.fake.Writes()-w)
	}
	// A different VNI port makes the old device incompatible... the same
	// name with another port: recreated.
	r2.b.Close()
	r3 := newRig(t, r.fake, `{"Type":"vxlan","Port":4789}`)
	if err := r3.set(t, []subnet.Lease{peer(2, false)}); err != nil {
		t.Fatal(err)
	}
	l3, _ := r.fake.LinkByName("flannel.1")
	if l3.Index == before.Index || l3.VXLAN.Port != 4789 {
		t.Errorf("incompatible device not recreated: %+v", l3)
	}
}

func TestDirectRouting(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan","DirectRouting":true}`)
	if err := r.set(t, []subnet.Lease{peer(2, false), peer(3, true)}); err != nil {
		t.Fatal(err)
	}
	d := r.fake.Dump()
	for _, want := range []string{
		"route 10.244.2.0/24 via 192.168.0.102 dev eth0\n",
		"route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink\n",
		"fdb " + VtepMAC(netip.MustParseAddr("172.16.0.103"), 1).String() + " dev flannel.1 dst 172.16.0.103\n",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("missing %q in\n%s", want, d)
		}
	}
	if strings.Contains(d, "neigh 10.244.2.0") {
		t.Errorf("direct peer got a neighbour entry:\n%s", d)
	}
	// Removing the peers removes their routes, and only theirs.
	if err := r.set(t, nil); err != nil {
		t.Fatal(err)
	}
	if d := r.fake.Dump(); strings.Contains(d, "10.244.2.0/24") || !strings.Contains(d, "route 192.168.0.0/24 dev eth0") {
		t.Errorf("after removal:\n%s", d)
	}
}

func TestForeignRoutesKept(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	eth0, _ := r.fake.LinkByName("eth0")
	foreign := []netlinkx.Route{
		{Dst: netip.MustParsePrefix("10.244.9.0/24"), Gw: netip.MustParseAddr("192.168.0.9"), LinkIndex: eth0.Index},
		{Dst: netip.MustParsePrefix("10.50.0.0/16"), Gw: netip.MustParseAddr("192.168.0.9"), LinkIndex: eth0.Index},
	}
	for _, fr := range foreign {
		if err := r.fake.ReplaceRoute(fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.set(t, []subnet.Lease{peer(2, false)}); err != nil {
		t.Fatal(err)
	}
	d := r.fake.Dump()
	for _, want := range []string{"route 10.244.9.0/24 via 192.168.0.9 dev eth0", "route 10.50.0.0/16 via 192.168.0.9 dev eth0"} {
		if !strings.Contains(d, want) {
			t.Errorf("foreign route %q removed:\n%s", want, d)
		}
	}
}

func TestWriteFailureReported(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	boom := errors.New("boom")
	r.fake.FailWrites(func(op string, arg any) error {
		if n, ok := arg.(netlinkx.Neigh); ok && op == "SetNeigh" && n.IP == netip.MustParseAddr("10.244.3.0") {
			return boom
		}
		return nil
	})
	err := r.set(t, []subnet.Lease{peer(2, false), peer(3, false)})
	if !errors.Is(err, boom) {
		t.Fatalf("Set error = %v, want boom", err)
	}
	if d := r.fake.Dump(); strings.Contains(d, "route 10.244.3.0/24") || !strings.Contains(d, "route 10.244.2.0/24") {
		t.Errorf("a route was written without its neighbour, or the good peer was blocked:\n%s", d)
	}
	r.fake.FailWrites(nil)
	if err := r.set(t, []subnet.Lease{peer(2, false), peer(3, false)}); err != nil {
		t.Fatal(err)
	}
	if d := r.fake.Dump(); !strings.Contains(d, "route 10.244.3.0/24") {
		t.Errorf("not repaired after the failure:\n%s", d)
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Options
		wantErr string
	}{
		{in: ``, want: Options{VNI: 1, Port: 8472}},
		{in: `{"Type":"vxlan"}`, want: Options{VNI: 1, Port: 8472}},
		{in: `{"Type":"vxlan","VNI":4096,"Port":4789,"GBP":true,"MTU":1400,"DirectRouting":true}`, want: Options{VNI: 4096, Port: 4789, GBP: true, MTU: 1400, DirectRouting: true}},
		{in: `{"Port":0}`, want: Options{VNI: 1, Port: 8472}},
		{in: `{"VNI":-1}`, wantErr: "VNI -1"},
		{in: `{"VNI":1.5}`, wantErr: "VNI 1.5"},
		{in: `{"VNI":16777216}`, wantErr: "VNI 16777216"},
		{in: `{"VNI":10000000}`, wantErr: "longer than"},
		{in: `{"Port":70000}`, wantErr: "Port 70000"},
		{in: `{"MTU":20}`, wantErr: "MTU 20"},
		{in: `{"GBP":"yes"}`, wantErr: "GBP"},
		{in: `[1]`, wantErr: "Backend"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseOptions(json.RawMessage(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidOptions) {
					t.Fatalf("ParseOptions(%s) error = %v, want one mentioning %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseOptions(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestValidateData(t *testing.T) {
	cfg := mustConfig(t, `{"Type":"vxlan","VNI":7}`)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"VNI":7,"VtepMAC":"c6:d2:32:6f:8f:44"}`, true},
		{`{"VtepMAC":"c6:d2:32:6f:8f:44","VNI":7}`, true},
		{`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`, false},
		{`{"VNI":7,"VtepMAC":"01:00:5e:00:00:01"}`, false},
		{`{"VNI":7,"VtepMAC":"00:00:00:00:00:00"}`, false},
		{`{"VNI":7,"VtepMAC":"zz"}`, false},
		{`{"VNI":7}`, false},
		{`{"VtepMAC":"c6:d2:32:6f:8f:44"}`, false},
		{`null`, false},
		{``, false},
		{`"x"`, false},
	} {
		err := ValidateData(cfg, json.RawMessage(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("ValidateData(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestLeaseAttrsExact(t *testing.T) {
	r := newRig(t, nil, `{"Type":"vxlan"}`)
	var a subnet.LeaseAttrs
	if err := r.b.LeaseAttrs(&a); err != nil {
		t.Fatal(err)
	}
	want := `{"VNI":1,"VtepMAC":"` + VtepMAC(netip.MustParseAddr("192.168.0.1"), 1).String() + `"}`
	if a.BackendType != "vxlan" || string(a.BackendData) != want {
		t.Errorf("LeaseAttrs = %q %s, want vxlan %s", a.BackendType, a.BackendData, want)
	}
	if r.b.MTU() != 1450 {
		t.Errorf("MTU = %d, want 1450", r.b.MTU())
	}
}

func TestVtepMAC(t *testing.T) {
	seen := map[netlinkx.MAC]bool{}
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		for vni := 1; vni <= 2; vni++ {
			m := VtepMAC(ip, vni)
			if m != VtepMAC(ip, vni) {
				t.Fatal("not deterministic")
			}
			if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
				t.Fatalf("%s is not locally administered unicast", m)
			}
			if seen[m] {
				t.Fatalf("collision on %s", m)
			}
			seen[m] = true
		}
	}
}

// BenchmarkFakeOneChange5000 is BenchmarkOneChange5000 against the Fake:
// the backend's own CPU cost of one peer change with 5,000 present, without
// the kernel.
func BenchmarkFakeOneChange5000(b *testing.B) {
	benchFakeOneChange(b, benchNetwork, benchPeers(5001), subnet.Lease{Subnet: benchOwn})
}

// BenchmarkFakeOneChangeDualStack5000 is BenchmarkFakeOneChange5000 in a
// dual-stack network, the IPv6 subnets in another order than the IPv4 ones.
func BenchmarkFakeOneChangeDualStack5000(b *testing.B) {
	benchFakeOneChange(b, benchDualNetwork, benchDualPeers(5001), subnet.Lease{Subnet: benchOwn, IPv6Subnet: benchOwn6})
}

// benchFakeOneChange adds or removes the last of peers on the Fake, one Set
// per operation.
func benchFakeOneChange(b *testing.B, config string, with []subnet.Lease, own subnet.Lease) {
	cfg, _, err := subnet.ParseConfig([]byte(config))
	if err != nil {
		b.Fatal(err)
	}
	fake := netlinkx.NewFake()
	eth0 := fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	addr, addr6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("2001:db8::1")
	ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr, Addr6: addr6, PublicIPv6: addr6}
	be, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext}, Config{Netlink: fake, VerifyEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	without := with[:len(with)-1]
	if err := be.Set(context.Background(), backend.State{Own: own, Peers: without}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		ps := without
		if i%2 == 0 {
			ps = with
		}
		if err := be.Set(context.Background(), backend.State{Own: own, Peers: ps}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIncrementalMatchesScratch drives one backend through random peer sets
// (MAC conflicts, duplicate subnets, bad leases, DirectRouting, MAC and
// address changes) and checks after each Set that the kernel state and the
// error are those of a fresh backend given the same set: the incremental
// derivation must not depend on history.
func TestIncrementalMatchesScratch(t *testing.T) {
	variant := func(rng *rand.Rand, i int) subnet.Lease {
		p := peer(i, rng.IntN(3) == 0)
		switch rng.IntN(8) {
		case 0: // another node's MAC
			p.Attrs.BackendData = peer(2+rng.IntN(6), false).Attrs.BackendData
		case 1:
			p.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:%02x"}`, rng.IntN(3)))
		case 2:
			p.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1")
		case 3:
			p.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"nope"}`)
		}
		return p
	}
	for _, opts := range []string{`{"Type":"vxlan"}`, `{"Type":"vxlan","DirectRouting":true}`} {
		for seed := range uint64(10) {
			rng := rand.New(rand.NewPCG(seed, 7))
			r := newRig(t, nil, opts)
			for step := range 12 {
				var ps []subnet.Lease
				for i := 2; i < 10; i++ {
					if rng.IntN(3) > 0 {
						ps = append(ps, variant(rng, i))
					}
					if rng.IntN(10) == 0 { // a second holder of the subnet
						ps = append(ps, variant(rng, i))
					}
				}
				rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
				if os.Getenv("DBG") != "" {
					for _, p := range ps {
						t.Logf("step %d: %s %s %s", step, p.Subnet, p.Attrs.PublicIP, p.Attrs.BackendData)
					}
				}
				errInc := r.set(t, ps)
				fresh := newRig(t, nil, opts)
				errScratch := fresh.set(t, ps)
				if fmt.Sprint(errInc) != fmt.Sprint(errScratch) {
					t.Fatalf("%s seed %d step %d: error\n%v\nfrom scratch:\n%v", opts, seed, step, errInc, errScratch)
				}
				if got, want := r.fake.Dump(), fresh.fake.Dump(); got != want {
					t.Fatalf("%s seed %d step %d: state\n%s\nfrom scratch:\n%s", opts, seed, step, got, want)
				}
				checkView(t, r.b.v4, fmt.Sprintf("%s seed %d step %d", opts, seed, step))
				checkView(t, fresh.b.v4, fmt.Sprintf("%s seed %d step %d from scratch", opts, seed, step))
				fresh.b.Close()
			}
		}
	}
}

// TestChangedMatchesScratch is TestIncrementalMatchesScratch for a caller
// that names the changed subnets (backend.State.Incremental), in IPv4,
// dual-stack and IPv6-only networks: after each step the kernel matches a
// backend that derived the same set from nothing, and a Set that failed
// before it took its state (a cancelled context) does not lose the changes
// it named.
func TestChangedMatchesScratch(t *testing.T) {
	mutate := func(rng *rand.Rand, p subnet.Lease) subnet.Lease {
		switch rng.IntN(8) {
		case 0: // another node's MAC
			if p.Subnet.IsValid() {
				p.Attrs.BackendData = peer(2+rng.IntN(6), false).Attrs.BackendData
			} else {
				p.Attrs.BackendV6Data = peer6(2+rng.IntN(6), false).Attrs.BackendV6Data
			}
		case 1:
			if p.Subnet.IsValid() {
				p.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1")
			}
		}
		return p
	}
	for _, tc := range []struct {
		name  string
		rig   func(t *testing.T) *rig
		lease func(rng *rand.Rand, i int) subnet.Lease
	}{
		{"ipv4", func(t *testing.T) *rig { return newRig(t, nil, `{"Type":"vxlan"}`) },
			func(rng *rand.Rand, i int) subnet.Lease { return mutate(rng, peer(i, rng.IntN(3) == 0)) }},
		{"ipv4-direct", func(t *testing.T) *rig { return newRig(t, nil, `{"Type":"vxlan","DirectRouting":true}`) },
			func(rng *rand.Rand, i int) subnet.Lease { return mutate(rng, peer(i, rng.IntN(3) == 0)) }},
		{"dual", func(t *testing.T) *rig { return newRig6(t, nil, dualConfig, `{"Type":"vxlan"}`) },
			func(rng *rand.Rand, i int) subnet.Lease { return mutate(rng, peer6(i, rng.IntN(4) == 0)) }},
		{"ipv6", func(t *testing.T) *rig { return newRig6(t, nil, v6Config, `{"Type":"vxlan"}`) },
			func(rng *rand.Rand, i int) subnet.Lease { return mutate(rng, v6only(peer6(i, false))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups := func(ps []subnet.Lease) map[netip.Prefix]string {
				m := map[netip.Prefix]string{}
				for _, p := range ps {
					m[p.Primary()] += fmt.Sprintf("%+v;", p)
				}
				return m
			}
			for seed := range uint64(10) {
				rng := rand.New(rand.NewPCG(seed, 11))
				r := tc.rig(t)
				var prev []subnet.Lease
				for step := range 16 {
					ps := slices.Clone(prev)
					for range 1 + rng.IntN(3) { // a few changes: add, replace or remove one node
						i := 2 + rng.IntN(8)
						l := tc.lease(rng, i)
						ps = slices.DeleteFunc(ps, func(o subnet.Lease) bool { return o.Primary() == l.Primary() })
						if rng.IntN(4) > 0 {
							ps = append(ps, l)
						}
					}
					slices.SortStableFunc(ps, func(x, y subnet.Lease) int { return subnet.CompareSubnets(x.Primary(), y.Primary()) })
					was, now := groups(prev), groups(ps)
					var changed []netip.Prefix
					for sn, g := range now {
						if was[sn] != g {
							changed = append(changed, sn)
						}
					}
					for sn := range was {
						if _, ok := now[sn]; !ok {
							changed = append(changed, sn)
						}
					}
					st := backend.State{Own: r.own, Peers: ps, Incremental: step > 0, Changed: changed}
					if rng.IntN(6) == 0 {
						ctx, cancel := context.WithCancel(context.Background())
						cancel()
						if err := r.b.Set(ctx, st); err == nil {
							t.Fatal("Set with a cancelled context succeeded")
						}
						st.Changed = nil // the next Set names nothing, yet must catch up
					}
					errInc := r.b.Set(context.Background(), st)
					fresh := tc.rig(t)
					errScratch := fresh.set(t, ps)
					if fmt.Sprint(errInc) != fmt.Sprint(errScratch) {
						t.Fatalf("seed %d step %d: error\n%v\nfrom scratch:\n%v", seed, step, errInc, errScratch)
					}
					if got, want := r.fake.Dump(), fresh.fake.Dump(); got != want {
						t.Fatalf("seed %d step %d: state\n%s\nfrom scratch:\n%s", seed, step, got, want)
					}
					fresh.b.Close()
					prev = ps
				}
			}
		})
	}
}
