package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/wg"
	"github.com/weftnet/weft/subnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustConfig(t testing.TB, backendJSON string) *subnet.Config {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":` + backendJSON + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// peerKey is host i's key pair, fixed so that goldens can name it.
func peerKey(i int) wgtypes.Key {
	var k wgtypes.Key
	k[1], k[2] = byte(i), 0x5a
	return k.PublicKey()
}

// lease returns host i's lease: subnet 10.244.i.0/24, PublicIP
// 192.168.0.(100+i), its public key and the port.
func lease(i, port int) subnet.Lease {
	ip := netip.AddrFrom4([4]byte{192, 168, 0, byte(100 + i)})
	data, _ := json.Marshal(BackendData{PublicKey: peerKey(i).String(), Port: port})
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: ip, BackendType: TypeName, BackendData: data},
	}
}

type rig struct {
	nl     *netlinkx.Fake
	engine *wg.Fake // flannel-wg's
	// engines are the devices' engines by name (the last opened).
	engines map[string]*wg.Fake
	opened  []wg.Device
	b       *Backend
	own     subnet.Lease
}

func newRig(t testing.TB, backendJSON string) *rig {
	t.Helper()
	return newRigConf(t, mustConfig(t, backendJSON))
}

// newRigConf makes a rig for any network config: the underlay eth0 has
// 192.168.0.1 and 2001:db8::1.
func newRigConf(t testing.TB, cfg *subnet.Config) *rig {
	t.Helper()
	r := &rig{nl: netlinkx.NewFake(), engines: map[string]*wg.Fake{}}
	eth0 := r.nl.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	addr, addr6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("2001:db8::1")
	open := func(d wg.Device, o wg.Options) (wg.Engine, error) {
		if _, err := r.nl.LinkByName(d.Name); err != nil {
			r.nl.AddLink(d.Name, d.MTU)
		}
		r.opened = append(r.opened, d)
		e := wg.NewFake(wg.Userspace)
		r.engines[d.Name] = e
		if d.Name == DeviceName {
			r.engine = e
		}
		return e, nil
	}
	b, err := New(context.Background(), backend.Params{
		Config: cfg,
		Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr, Addr6: addr6, PublicIPv6: addr6},
	}, Config{Host: Host{KeyFile: filepath.Join(t.TempDir(), "wgkey")}, Netlink: r.nl, Open: open, VerifyEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.b = b
	r.own = lease(1, 51820)
	r.own.Attrs.BackendData, _ = json.Marshal(BackendData{PublicKey: b.PublicKey().String(), Port: 51820})
	if cfg.EnableIPv6 {
		r.own = lease6(1, 51820, 51821, cfg.EnableIPv4)
		d, _ := json.Marshal(BackendData{PublicKey: b.PublicKey().String(), Port: 51820})
		d6, _ := json.Marshal(BackendData{PublicKey: b.PublicKey().String(), Port: 51821})
		if cfg.EnableIPv4 {
			r.own.Attrs.BackendData = d
		}
		r.own.Attrs.BackendV6Data = d6
	}
	return r
}

// lease6 returns host i's dual-stack (or, without v4, IPv6-only) lease:
// lease(i, port) plus IPv6 subnet fd00:10:244:i::/64, PublicIPv6
// 2001:db8::1<i as two hex digits> and BackendV6Data with port6.
func lease6(i, port, port6 int, v4 bool) subnet.Lease {
	l := lease(i, port)
	l.IPv6Subnet = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 0, byte(i)}), 64)
	ip6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: 0x01, 15: byte(i)})
	l.Attrs.PublicIPv6 = &ip6
	l.Attrs.BackendV6Data, _ = json.Marshal(BackendData{PublicKey: peerKey(i).String(), Port: port6})
	if !v4 {
		l.Subnet = netip.Prefix{}
		l.Attrs.PublicIP = netip.Addr{}
		l.Attrs.BackendData = nil
	}
	return l
}

func (r *rig) set(t testing.TB, peers ...subnet.Lease) error {
	t.Helper()
	return r.b.Set(context.Background(), backend.State{Own: r.own, Peers: peers})
}

// dump is the engine's peers and the kernel's state of the device, as
// text.
func (r *rig) dump() string {
	var lines []string
	for _, l := range strings.Split(r.nl.Dump(), "\n") {
		if strings.Contains(l, "flannel-wg") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n") + "\n" + r.engine.Dump()
}

func TestSetGolden(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard","PersistentKeepaliveInterval":25}`)
	if err := r.set(t, r.own, lease(2, 51820), lease(3, 0)); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`addr flannel-wg 10.244.1.0/32
link flannel-wg veth mtu 1440 mac 02:ee:00:00:00:03 up
route 10.244.0.0/16 dev flannel-wg
peer %s endpoint 192.168.0.102:51820 allowed-ips 10.244.2.0/24 keepalive 25s
peer %s endpoint 192.168.0.103:51820 allowed-ips 10.244.3.0/24 keepalive 25s
`, peerKey(2), peerKey(3))
	// The fake lists peers by key; put the expected lines in that order.
	if got := r.dump(); sortedLines(got) != sortedLines(want) {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if r.b.MTU() != 1440 {
		t.Errorf("MTU = %d, want 1500 - 60", r.b.MTU())
	}
	if got := r.opened; len(got) != 1 || got[0].Name != "flannel-wg" || got[0].ListenPort != 51820 || got[0].MTU != 1440 || got[0].PrivateKey == (wgtypes.Key{}) {
		t.Errorf("engine opened with %+v", got)
	}
	// The same state again changes nothing.
	r.engine.TakeOps()
	w := r.nl.Writes()
	if err := r.set(t, r.own, lease(2, 51820), lease(3, 0)); err != nil {
		t.Fatal(err)
	}
	if ops := r.engine.TakeOps(); len(ops) != 0 || r.nl.Writes() != w {
		t.Errorf("an unchanged state wrote %v and %d netlink writes", ops, r.nl.Writes()-w)
	}
}

func sortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

// TestSetSequence applies a sequence of peer sets and checks the engine's
// operations: added (or changed) before removed, a rotated key followed, a
// removed peer gone.
func TestSetSequence(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard","PSK":"`+testKey+`"}`)
	if err := r.set(t, lease(2, 51820), lease(3, 51820)); err != nil {
		t.Fatal(err)
	}
	r.engine.TakeOps()

	// host3's key rotated and host4 joins, host2 leaves: the new and
	// changed peers are set before the old ones are removed.
	rot := lease(3, 51820)
	rot.Attrs.BackendData, _ = json.Marshal(BackendData{PublicKey: peerKey(33).String(), Port: 51820})
	if err := r.set(t, rot, lease(4, 51820)); err != nil {
		t.Fatal(err)
	}
	ops := r.engine.TakeOps()
	if len(ops) != 4 || !strings.HasPrefix(ops[0], "set") || !strings.HasPrefix(ops[1], "set") || !strings.HasPrefix(ops[2], "remove") || !strings.HasPrefix(ops[3], "remove") {
		t.Fatalf("ops = %q, want two sets, then two removes", ops)
	}
	peers, _ := r.engine.Peers()
	var got []string
	for _, p := range peers {
		if p.PresharedKey.String() != testKey {
			t.Errorf("peer %s has no PSK", p.PublicKey)
		}
		got = append(got, p.PublicKey.String()+" "+p.AllowedIPs[0].String())
	}
	slices.Sort(got)
	want := []string{peerKey(33).String() + " 10.244.3.0/24", peerKey(4).String() + " 10.244.4.0/24"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("peers = %v, want %v", got, want)
	}

	// A changed endpoint (the peer moved) is an update, not a remove.
	moved := lease(4, 51900)
	if err := r.set(t, rot, moved); err != nil {
		t.Fatal(err)
	}
	if ops := r.engine.TakeOps(); len(ops) != 1 || !strings.Contains(ops[0], "192.168.0.104:51900") {
		t.Errorf("ops after a port change = %q", ops)
	}

	// Everyone leaves.
	if err := r.set(t); err != nil {
		t.Fatal(err)
	}
	if d := r.engine.Dump(); d != "" {
		t.Errorf("peers left: %s", d)
	}
	// The route stays: it is the network's, not a peer's.
	if !strings.Contains(r.nl.Dump(), "route 10.244.0.0/16 dev flannel-wg") {
		t.Errorf("route gone with the peers:\n%s", r.nl.Dump())
	}
}

// TestSetBadPeers: peers that cannot be used are skipped with an error
// naming them; the others are programmed; duplicates skip every holder.
func TestSetBadPeers(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	badKey := lease(3, 51820)
	badKey.Attrs.BackendData = json.RawMessage(`{"PublicKey":"nope","Port":51820}`)
	badPort := lease(4, 51820)
	badPort.Attrs.BackendData = json.RawMessage(`{"PublicKey":"` + peerKey(4).String() + `","Port":99999}`)
	vx := lease(5, 51820)
	vx.Attrs.BackendType = "vxlan"
	dupA, dupB := lease(6, 51820), lease(7, 51820)
	dupB.Attrs.BackendData = dupA.Attrs.BackendData
	ownKey := lease(8, 51820)
	ownKey.Attrs.BackendData = r.own.Attrs.BackendData
	noIP := lease(9, 51820)
	noIP.Attrs.PublicIP = netip.MustParseAddr("0.0.0.0")
	twinA, twinB := lease(10, 51820), lease(10, 51820)
	twinB.Attrs.PublicIP = netip.MustParseAddr("192.168.0.210")
	outside := lease(11, 51820)
	outside.Subnet = netip.MustParsePrefix("10.99.11.0/24")

	err := r.set(t, lease(2, 51820), badKey, badPort, vx, dupA, dupB, ownKey, noIP, twinA, twinB, outside)
	if err == nil {
		t.Fatal("no error for the bad peers")
	}
	for _, want := range []string{"10.244.3.0-24", `PublicKey "nope"`, "10.244.4.0-24", "Port 99999", "10.244.5.0-24", `BackendType "vxlan"`,
		"10.244.6.0-24", "10.244.7.0-24", "also advertised", "10.244.8.0-24", "this node's own", "10.244.9.0-24", "PublicIP",
		"10.244.10.0-24", "another peer holds", "10.99.11.0-24"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	peers, _ := r.engine.Peers()
	if len(peers) != 1 || peers[0].PublicKey != peerKey(2) {
		t.Errorf("peers = %v, want host2's only", peers)
	}
}

// TestSetOrderIndependent: the same peer set in any order gives the same
// device state, whatever came before.
func TestSetOrderIndependent(t *testing.T) {
	var all []subnet.Lease
	for i := 2; i < 30; i++ {
		all = append(all, lease(i, 51820+i%3))
	}
	dup := lease(40, 51820)
	dup.Attrs.BackendData = all[5].Attrs.BackendData
	all = append(all, dup)
	ref := newRig(t, `{"Type":"wireguard"}`)
	refErr := ref.set(t, all...)
	want := ref.engine.Dump()
	for seed := range uint64(5) {
		r := newRig(t, `{"Type":"wireguard"}`)
		rng := rand.New(rand.NewPCG(seed, 1))
		// Some history first.
		part := slices.Clone(all[:10])
		rng.Shuffle(len(part), func(i, j int) { part[i], part[j] = part[j], part[i] })
		_ = r.set(t, part...)
		shuffled := slices.Clone(all)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		err := r.set(t, shuffled...)
		if got := r.engine.Dump(); got != want {
			t.Errorf("seed %d: state differs:\n%s\nwant\n%s", seed, got, want)
		}
		if fmt.Sprint(err) != fmt.Sprint(refErr) {
			t.Errorf("seed %d: error %v, want %v", seed, err, refErr)
		}
	}
}

// TestSetRepairs: a deleted route comes back, a deleted device is made
// again (and its peers programmed again), a failing peer does not block the
// others.
func TestSetRepairs(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	if err := r.set(t, lease(2, 51820), lease(3, 51820)); err != nil {
		t.Fatal(err)
	}
	l, _ := r.nl.LinkByName("flannel-wg")
	if err := r.nl.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.244.0.0/16"), LinkIndex: l.Index}); err != nil {
		t.Fatal(err)
	}
	r.b.Resync() // what the netlink subscription does on the echo
	if err := r.set(t, lease(2, 51820), lease(3, 51820)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.nl.Dump(), "route 10.244.0.0/16 dev flannel-wg") {
		t.Errorf("route not restored:\n%s", r.nl.Dump())
	}

	old := r.engine
	if err := r.nl.DeleteLink(l.Index); err != nil {
		t.Fatal(err)
	}
	r.b.Resync()
	if err := r.set(t, lease(2, 51820), lease(3, 51820)); err != nil {
		t.Fatal(err)
	}
	if !old.Closed || r.engine == old || len(r.opened) != 2 {
		t.Errorf("the engine was not opened again on a new device (opened %d times, old closed %v)", len(r.opened), old.Closed)
	}
	if d := r.engine.Dump(); strings.Count(d, "peer ") != 2 {
		t.Errorf("peers on the new device:\n%s", d)
	}
	dump := r.nl.Dump()
	for _, want := range []string{"addr flannel-wg 10.244.1.0/32", "route 10.244.0.0/16 dev flannel-wg", "link flannel-wg veth mtu 1440"} {
		if !strings.Contains(dump, want) {
			t.Errorf("after the device was made again, lacks %q:\n%s", want, dump)
		}
	}

	r.engine.FailSet = map[wg.Key]error{peerKey(4): errors.New("no memory")}
	err := r.set(t, lease(2, 51820), lease(3, 51820), lease(4, 51820), lease(5, 51820))
	if err == nil || !strings.Contains(err.Error(), "no memory") {
		t.Errorf("a failing peer: %v", err)
	}
	if d := r.engine.Dump(); !strings.Contains(d, peerKey(5).String()) {
		t.Errorf("host5 not programmed beside the failing host4:\n%s", d)
	}
}

// TestOwnSubnetChanges: a new own lease moves the device's address.
func TestOwnSubnetChanges(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	if err := r.set(t, lease(2, 51820)); err != nil {
		t.Fatal(err)
	}
	r.own.Subnet = netip.MustParsePrefix("10.244.77.0/24")
	if err := r.set(t, lease(2, 51820)); err != nil {
		t.Fatal(err)
	}
	d := r.nl.Dump()
	if !strings.Contains(d, "addr flannel-wg 10.244.77.0/32") || strings.Contains(d, "10.244.1.0/32") {
		t.Errorf("addresses after the own subnet changed:\n%s", d)
	}
	if err := r.b.Set(context.Background(), backend.State{Own: subnet.Lease{Subnet: netip.MustParsePrefix("10.1.0.0/24")}}); err == nil {
		t.Error("an own subnet outside the network was accepted")
	}
}

func TestLeaseAttrsAndClose(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard","ListenPort":51830}`)
	var a subnet.LeaseAttrs
	if err := r.b.LeaseAttrs(&a); err != nil {
		t.Fatal(err)
	}
	want := `{"PublicKey":"` + r.b.PublicKey().String() + `","Port":51830,"Engine":"userspace"}`
	if a.BackendType != "wireguard" || string(a.BackendData) != want || a.BackendV6Data != nil {
		t.Errorf("lease attrs = %s %s %s, want %s", a.BackendType, a.BackendData, a.BackendV6Data, want)
	}
	if _, err := ParseBackendData(a.BackendData); err != nil {
		t.Errorf("own data does not parse: %v", err)
	}
	if r.b.Engine() != "userspace" {
		t.Errorf("Engine() = %q", r.b.Engine())
	}
	if err := r.set(t, lease(2, 51820)); err != nil {
		t.Fatal(err)
	}
	before := r.nl.Dump()
	if err := r.b.Close(); err != nil {
		t.Fatal(err)
	}
	if !r.engine.Closed {
		t.Error("Close did not close the engine")
	}
	if after := r.nl.Dump(); after != before {
		t.Errorf("Close changed the kernel state:\n%s\nwas\n%s", after, before)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	nl := netlinkx.NewFake()
	eth0 := nl.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	addr, addr6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("2001:db8::1")
	ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr, Addr6: addr6, PublicIPv6: addr6}
	open := func(d wg.Device, o wg.Options) (wg.Engine, error) { return nil, wg.ErrNoKernelWireGuard }
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("garbage"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, backend, keyFile, want string
		dual                         bool
	}{
		{"bad options", `{"Type":"wireguard","Mode":"x"}`, filepath.Join(dir, "k1"), `Mode "x"`, false},
		{"malformed key file", `{"Type":"wireguard"}`, bad, bad, false},
		{"engine fails", `{"Type":"wireguard","Engine":"kernel"}`, filepath.Join(dir, "k2"), "no WireGuard", false},
		{"engine fails dual-stack", `{"Type":"wireguard","Engine":"kernel"}`, filepath.Join(dir, "k4"), "flannel-wg: ", true},
		{"single tunnel IPv6 MTU", `{"Type":"wireguard","Mode":"auto","MTU":1340}`, filepath.Join(dir, "k6"), "device MTU 1260 (underlay MTU 1340 minus 80) is too small", true},
		{"IPv6 MTU", `{"Type":"wireguard","MTU":1340}`, filepath.Join(dir, "k5"), "device MTU 1260 (underlay MTU 1340 minus 80) is too small", true},
	} {
		cfg := mustConfig(t, tc.backend)
		if tc.dual {
			cfg = mustDual(t, tc.backend, true)
		}
		_, err := New(context.Background(), backend.Params{Config: cfg, Ext: ext},
			Config{Host: Host{KeyFile: tc.keyFile}, Netlink: nl, Open: open})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// mustDual is a dual-stack network config (IPv6-only without v4).
func mustDual(t testing.TB, backendJSON string, v4 bool) *subnet.Config {
	t.Helper()
	conf := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":` + backendJSON + `}`
	if !v4 {
		conf = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":` + backendJSON + `}`
	}
	cfg, _, err := subnet.ParseConfig([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestLeaseAttrsV6: with IPv6 on, BackendV6Data carries the same key, the
// port flannel-wg-v6 listens on, and the engine, as BackendData does; an
// IPv6-only node writes BackendV6Data only.
func TestLeaseAttrsV6(t *testing.T) {
	for _, tc := range []struct {
		backend string
		v4      bool
		port    int
	}{
		{`{"Type":"wireguard"}`, true, 51821},
		{`{"Type":"wireguard","ListenPortV6":51900}`, true, 51900},
		{`{"Type":"wireguard","Mode":"separate"}`, false, 51821},
	} {
		r := newRigConf(t, mustDual(t, tc.backend, tc.v4))
		var a subnet.LeaseAttrs
		if err := r.b.LeaseAttrs(&a); err != nil {
			t.Fatal(err)
		}
		d6, err6 := ParseBackendData(a.BackendV6Data)
		want6 := fmt.Sprintf(`{"PublicKey":"%s","Port":%d,"Engine":"userspace"}`, r.b.PublicKey(), tc.port)
		if err6 != nil || d6.PublicKey != r.b.PublicKey() || string(a.BackendV6Data) != want6 {
			t.Errorf("%s: BackendV6Data %s (%v), want %s", tc.backend, a.BackendV6Data, err6, want6)
		}
		want4 := fmt.Sprintf(`{"PublicKey":"%s","Port":51820,"Engine":"userspace"}`, r.b.PublicKey())
		if !tc.v4 {
			want4 = ""
		}
		if string(a.BackendData) != want4 {
			t.Errorf("%s: BackendData %s, want %q", tc.backend, a.BackendData, want4)
		}
	}
}

// TestSetDualStackGolden: in separate mode a dual-stack node has
// flannel-wg (v4 peers, port 51820, MTU 1440) and flannel-wg-v6 (v6
// peers at [PublicIPv6]:BackendV6Data.Port, port 51821, MTU 1420, the own
// IPv6 subnet's address as a /128, the route to IPv6Network); FLANNEL_MTU
// is the smaller. A peer still IPv4-only is on flannel-wg only.
func TestSetDualStackGolden(t *testing.T) {
	r := newRigConf(t, mustDual(t, `{"Type":"wireguard","PersistentKeepaliveInterval":25}`, true))
	v4only := lease(4, 51820)
	if err := r.set(t, r.own, lease6(2, 51820, 51821, true), lease6(3, 51820, 0, true), v4only); err != nil {
		t.Fatal(err)
	}
	want := `addr flannel-wg 10.244.1.0/32
addr flannel-wg-v6 fd00:10:244:1::/128
link flannel-wg veth mtu 1440 mac 02:ee:00:00:00:03 up
link flannel-wg-v6 veth mtu 1420 mac 02:ee:00:00:00:04 up
route 10.244.0.0/16 dev flannel-wg
route fd00:10:244:1::/128 dev flannel-wg-v6
route fd00:10:244::/56 dev flannel-wg-v6
`
	if got := r.kernel(); sortedLines(got) != sortedLines(want) {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
	}
	want4 := fmt.Sprintf("peer %s endpoint 192.168.0.102:51820 allowed-ips 10.244.2.0/24 keepalive 25s\npeer %s endpoint 192.168.0.103:51820 allowed-ips 10.244.3.0/24 keepalive 25s\npeer %s endpoint 192.168.0.104:51820 allowed-ips 10.244.4.0/24 keepalive 25s",
		peerKey(2), peerKey(3), peerKey(4))
	if got := r.engines[DeviceName].Dump(); sortedLines(got) != sortedLines(want4) {
		t.Errorf("flannel-wg peers:\n%s\nwant:\n%s", got, want4)
	}
	// host3 publishes port 0 (older flanneld): this node's ListenPortV6.
	want6 := fmt.Sprintf("peer %s endpoint [2001:db8::102]:51821 allowed-ips fd00:10:244:2::/64 keepalive 25s\npeer %s endpoint [2001:db8::103]:51821 allowed-ips fd00:10:244:3::/64 keepalive 25s",
		peerKey(2), peerKey(3))
	if got := r.engines[DeviceNameV6].Dump(); sortedLines(got) != sortedLines(want6) {
		t.Errorf("flannel-wg-v6 peers:\n%s\nwant:\n%s", got, want6)
	}
	if r.b.MTU() != 1420 {
		t.Errorf("MTU = %d, want 1500 - 80 (the smaller device's)", r.b.MTU())
	}
	var ports []string
	for _, d := range r.opened {
		ports = append(ports, fmt.Sprintf("%s:%d:%d", d.Name, d.ListenPort, d.MTU))
	}
	if got := strings.Join(ports, " "); got != "flannel-wg:51820:1440 flannel-wg-v6:51821:1420" {
		t.Errorf("engines opened: %s", got)
	}
	if r.opened[0].PrivateKey != r.opened[1].PrivateKey {
		t.Error("the two devices have different keys")
	}
	// Unchanged state: no writes.
	r.engines[DeviceNameV6].TakeOps()
	r.engine.TakeOps()
	w := r.nl.Writes()
	if err := r.set(t, r.own, lease6(2, 51820, 51821, true), lease6(3, 51820, 0, true), v4only); err != nil {
		t.Fatal(err)
	}
	if ops := append(r.engine.TakeOps(), r.engines[DeviceNameV6].TakeOps()...); len(ops) != 0 || r.nl.Writes() != w {
		t.Errorf("an unchanged state wrote %v and %d netlink writes", ops, r.nl.Writes()-w)
	}
}

// kernel is the kernel's state of the WireGuard devices, as text.
func (r *rig) kernel() string {
	var lines []string
	for _, l := range strings.Split(r.nl.Dump(), "\n") {
		if strings.Contains(l, "flannel-wg") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestSetIPv6Only: without IPv4, flannel-wg-v6 is the only device.
func TestSetIPv6Only(t *testing.T) {
	r := newRigConf(t, mustDual(t, `{"Type":"wireguard","ListenPortV6":51999}`, false))
	if err := r.set(t, r.own, lease6(2, 0, 51999, false), lease6(3, 0, 51821, false)); err != nil {
		t.Fatal(err)
	}
	want := `addr flannel-wg-v6 fd00:10:244:1::/128
link flannel-wg-v6 veth mtu 1420 mac 02:ee:00:00:00:03 up
route fd00:10:244:1::/128 dev flannel-wg-v6
route fd00:10:244::/56 dev flannel-wg-v6`
	if got := r.kernel(); sortedLines(got) != sortedLines(want) {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
	}
	want6 := fmt.Sprintf("peer %s endpoint [2001:db8::102]:51999 allowed-ips fd00:10:244:2::/64\npeer %s endpoint [2001:db8::103]:51821 allowed-ips fd00:10:244:3::/64", peerKey(2), peerKey(3))
	if got := r.engines[DeviceNameV6].Dump(); sortedLines(got) != sortedLines(want6) {
		t.Errorf("peers:\n%s\nwant:\n%s", got, want6)
	}
	if r.engine != nil || len(r.opened) != 1 || r.opened[0].ListenPort != 51999 {
		t.Errorf("engines opened: %+v", r.opened)
	}
	if r.b.MTU() != 1420 || r.b.Engine() != "userspace" {
		t.Errorf("MTU %d, engine %q", r.b.MTU(), r.b.Engine())
	}
}

// TestSetV6Sequence: on flannel-wg-v6, a rotated key is followed (set
// before the old key is removed), a moved peer updated, a removed peer
// gone, bad IPv6 data skipped with an error naming the lease while its
// IPv4 half is still programmed.
func TestSetV6Sequence(t *testing.T) {
	r := newRigConf(t, mustDual(t, `{"Type":"wireguard"}`, true))
	e6 := r.engines[DeviceNameV6]
	if err := r.set(t, lease6(2, 51820, 51821, true), lease6(3, 51820, 51821, true)); err != nil {
		t.Fatal(err)
	}
	e6.TakeOps()

	rot := lease6(3, 51820, 51821, true)
	rot.Attrs.BackendData, _ = json.Marshal(BackendData{PublicKey: peerKey(33).String(), Port: 51820})
	rot.Attrs.BackendV6Data, _ = json.Marshal(BackendData{PublicKey: peerKey(33).String(), Port: 51821})
	if err := r.set(t, rot, lease6(4, 51820, 51821, true)); err != nil {
		t.Fatal(err)
	}
	ops := e6.TakeOps()
	if len(ops) != 4 || !strings.HasPrefix(ops[0], "set") || !strings.HasPrefix(ops[1], "set") || !strings.HasPrefix(ops[2], "remove") || !strings.HasPrefix(ops[3], "remove") {
		t.Fatalf("v6 ops = %q, want two sets, then two removes", ops)
	}
	want := fmt.Sprintf("peer %s endpoint [2001:db8::103]:51821 allowed-ips fd00:10:244:3::/64\npeer %s endpoint [2001:db8::104]:51821 allowed-ips fd00:10:244:4::/64", peerKey(33), peerKey(4))
	if got := e6.Dump(); sortedLines(got) != sortedLines(want) {
		t.Errorf("v6 peers:\n%s\nwant:\n%s", got, want)
	}

	// host4 moves to another IPv6 address and port: an update.
	moved := lease6(4, 51820, 51900, true)
	ip := netip.MustParseAddr("2001:db8::444")
	moved.Attrs.PublicIPv6 = &ip
	if err := r.set(t, rot, moved); err != nil {
		t.Fatal(err)
	}
	if ops := e6.TakeOps(); len(ops) != 1 || !strings.Contains(ops[0], "[2001:db8::444]:51900") {
		t.Errorf("v6 ops after a move = %q", ops)
	}

	// Bad IPv6 halves: skipped on flannel-wg-v6 with an error naming the
	// lease; their IPv4 halves stay on flannel-wg.
	badKey := lease6(5, 51820, 51821, true)
	badKey.Attrs.BackendV6Data = json.RawMessage(`{"PublicKey":"nope","Port":51821}`)
	noIP := lease6(6, 51820, 51821, true)
	noIP.Attrs.PublicIPv6 = nil
	outside := lease6(7, 51820, 51821, true)
	outside.IPv6Subnet = netip.MustParsePrefix("fd99::/64")
	err := r.set(t, rot, moved, badKey, noIP, outside)
	for _, s := range []string{"10.244.5.0-24&fd00:10:244:5::-64", `BackendV6Data: BackendData PublicKey "nope"`, "10.244.6.0-24&fd00:10:244:6::-64", "PublicIPv6",
		"fd99::-64", "is not a /64 of IPv6 network"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
	if n := strings.Count(e6.Dump(), "peer "); n != 2 {
		t.Errorf("v6 peers with bad halves around:\n%s", e6.Dump())
	}
	if n := strings.Count(r.engine.Dump(), "peer "); n != 5 {
		t.Errorf("v4 peers (want 5, the bad v6 halves' v4 halves included):\n%s", r.engine.Dump())
	}

	// Everyone leaves; the route stays.
	if err := r.set(t); err != nil {
		t.Fatal(err)
	}
	if d := e6.Dump(); d != "" {
		t.Errorf("v6 peers left: %s", d)
	}
	if !strings.Contains(r.nl.Dump(), "route fd00:10:244::/56 dev flannel-wg-v6") {
		t.Errorf("v6 route gone with the peers:\n%s", r.nl.Dump())
	}

	// A deleted flannel-wg-v6 is made again, with its address, route and
	// peers; flannel-wg is left alone.
	l, _ := r.nl.LinkByName(DeviceNameV6)
	if err := r.nl.DeleteLink(l.Index); err != nil {
		t.Fatal(err)
	}
	r.b.Resync()
	if err := r.set(t, rot, moved); err != nil {
		t.Fatal(err)
	}
	if r.engines[DeviceNameV6] == e6 || !e6.Closed || strings.Count(r.engines[DeviceNameV6].Dump(), "peer ") != 2 {
		t.Errorf("flannel-wg-v6 not made again with its peers:\n%s", r.engines[DeviceNameV6].Dump())
	}
	for _, s := range []string{"addr flannel-wg-v6 fd00:10:244:1::/128", "route fd00:10:244::/56 dev flannel-wg-v6"} {
		if !strings.Contains(r.nl.Dump(), s) {
			t.Errorf("after flannel-wg-v6 was made again, lacks %q:\n%s", s, r.nl.Dump())
		}
	}
}

// TestSetSingleTunnel: in the single-tunnel modes with IPv6 on, one
// flannel-wg on ListenPort carries both families: both own addresses, a
// route per network, one peer per lease with its subnets of each family,
// at the endpoint the mode picks, on the peer's one port (BackendData's;
// for an IPv6-only flanneld peer this node's ListenPort).
func TestSetSingleTunnel(t *testing.T) {
	public := lease6(5, 51820, 51821, true) // a public IPv4 address: auto takes it
	public.Attrs.PublicIP = netip.MustParseAddr("203.0.113.5")
	v4only := lease(4, 51820)
	for _, tc := range []struct {
		mode  string
		v4    bool
		mtu   int
		peers []subnet.Lease
		want  []string
		skip  string
	}{
		{"auto", true, 1420, []subnet.Lease{lease6(2, 51820, 51821, true), public, v4only}, []string{
			"peer %2 endpoint [2001:db8::102]:51820 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64",
			"peer %4 endpoint 192.168.0.104:51820 allowed-ips 10.244.4.0/24",
			"peer %5 endpoint 203.0.113.5:51820 allowed-ips 10.244.5.0/24,fd00:10:244:5::/64",
		}, ""},
		{"ipv4", true, 1440, []subnet.Lease{lease6(2, 51820, 51821, true), v4only}, []string{
			"peer %2 endpoint 192.168.0.102:51820 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64",
			"peer %4 endpoint 192.168.0.104:51820 allowed-ips 10.244.4.0/24",
		}, ""},
		{"ipv6", true, 1420, []subnet.Lease{lease6(2, 51820, 51821, true), v4only}, []string{
			"peer %2 endpoint [2001:db8::102]:51820 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64",
		}, `10.244.4.0-24 (PublicIP 192.168.0.104): Mode "ipv6" needs the peer's IPv6 address`},
		{"auto", false, 1420, []subnet.Lease{lease6(2, 0, 51821, false), lease6(3, 0, 51821, false)}, []string{
			"peer %2 endpoint [2001:db8::102]:51820 allowed-ips fd00:10:244:2::/64",
			"peer %3 endpoint [2001:db8::103]:51820 allowed-ips fd00:10:244:3::/64",
		}, ""},
	} {
		name := fmt.Sprintf("%s v4=%v", tc.mode, tc.v4)
		r := newRigConf(t, mustDual(t, `{"Type":"wireguard","Mode":"`+tc.mode+`"}`, tc.v4))
		err := r.set(t, tc.peers...)
		if (tc.skip == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.skip)) {
			t.Errorf("%s: Set error %v, want %q", name, err, tc.skip)
		}
		if len(r.opened) != 1 || r.opened[0].Name != "flannel-wg" || r.opened[0].ListenPort != 51820 || r.b.MTU() != tc.mtu {
			t.Errorf("%s: opened %+v, MTU %d, want one flannel-wg on 51820 and MTU %d", name, r.opened, r.b.MTU(), tc.mtu)
		}
		var want []string
		for _, w := range tc.want {
			for i := 2; i <= 5; i++ {
				w = strings.ReplaceAll(w, fmt.Sprintf("%%%d", i), peerKey(i).String())
			}
			want = append(want, w)
		}
		if got := r.engine.Dump(); sortedLines(got) != sortedLines(strings.Join(want, "\n")) {
			t.Errorf("%s: peers:\n%s\nwant:\n%s", name, got, strings.Join(want, "\n"))
		}
		k := r.kernel()
		wantK := []string{"addr flannel-wg fd00:10:244:1::/128", "route fd00:10:244::/56 dev flannel-wg"}
		if tc.v4 {
			wantK = append(wantK, "addr flannel-wg 10.244.1.0/32", "route 10.244.0.0/16 dev flannel-wg")
		}
		for _, w := range wantK {
			if !strings.Contains(k, w) {
				t.Errorf("%s: kernel lacks %q:\n%s", name, w, k)
			}
		}
		if strings.Contains(k, "flannel-wg-v6") {
			t.Errorf("%s: a single-tunnel mode made flannel-wg-v6:\n%s", name, k)
		}
		var a subnet.LeaseAttrs
		if err := r.b.LeaseAttrs(&a); err != nil {
			t.Fatal(err)
		}
		d6, err := ParseBackendData(a.BackendV6Data)
		if err != nil || d6.Port != 51820 || d6.PublicKey != r.b.PublicKey() || (len(a.BackendData) > 0) != tc.v4 {
			t.Errorf("%s: lease data %s %s (%v): want the one device's port in BackendV6Data", name, a.BackendData, a.BackendV6Data, err)
		}
		// Plan (weft doctor) agrees: nothing to change, the same skips.
		eth0, _ := r.nl.LinkByName("eth0")
		ext := backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: r.b.Ext.Addr, PublicIP: r.b.Ext.Addr, Addr6: r.b.Ext.Addr6, PublicIPv6: r.b.Ext.Addr6}
		inspect := func(name, _ string) (wg.Kind, []wg.Peer, error) {
			if name != DeviceName {
				return "", nil, errors.New("no device " + name)
			}
			ps, err := r.engine.Peers()
			return wg.Userspace, ps, err
		}
		pl, err := Plan(context.Background(), backend.Params{Config: r.b.Cfg, Ext: ext}, Config{Netlink: r.nl, Inspect: inspect}, backend.State{Own: r.own, Peers: tc.peers})
		if err != nil || len(pl.Device)+len(pl.Changes) != 0 || (len(pl.Skipped) > 0) != (tc.skip != "") {
			t.Errorf("%s: plan of a programmed node: %+v (%v)", name, pl, err)
		}
		// Unchanged state: no writes.
		r.engine.TakeOps()
		w := r.nl.Writes()
		_ = r.set(t, tc.peers...)
		if ops := r.engine.TakeOps(); len(ops) != 0 || r.nl.Writes() != w {
			t.Errorf("%s: an unchanged state wrote %v and %d netlink writes", name, ops, r.nl.Writes()-w)
		}
	}
}

// TestRoamedEndpointKept: a peer whose endpoint WireGuard moved (an
// authenticated packet from a new address, as behind a NAT whose mapping
// changed) keeps it across reconciles while its handshakes are recent; it
// is set back to the advertised address once they are not, and follows its
// lease at once when the lease advertises a new address.
func TestRoamedEndpointKept(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	key := wg.Key(peerKey(2))
	l2, l3 := lease(2, 51820), lease(3, 51820)
	if err := r.set(t, l2, l3); err != nil {
		t.Fatal(err)
	}
	endpoint := func() netip.AddrPort {
		t.Helper()
		ps, _ := r.engine.Peers()
		for _, p := range ps {
			if p.PublicKey == key {
				return p.Endpoint
			}
		}
		t.Fatalf("no peer %s on the device:\n%s", key, r.engine.Dump())
		return netip.AddrPort{}
	}
	advertised := netip.AddrPortFrom(l2.Attrs.PublicIP, 51820)
	natted := netip.MustParseAddrPort("198.51.100.7:40123")
	r.engine.TakeOps()

	// Roamed, handshake just now: kept, nothing written.
	r.engine.Roam(key, natted, time.Now())
	if err := r.set(t, l2, l3); err != nil {
		t.Fatal(err)
	}
	if got := endpoint(); got != natted {
		t.Errorf("endpoint %s after a reconcile, want the roamed %s kept", got, natted)
	}
	if ops := r.engine.TakeOps(); len(ops) != 0 {
		t.Errorf("a reconcile wrote %v for a roamed peer", ops)
	}
	// The doctor's plan does not call it stale either.
	have, _ := r.engine.Peers()
	want, _ := r.b.devices()[0].desired(backend.State{Own: r.own, Peers: []subnet.Lease{l2, l3}})
	if ch := PeerChanges(have, want); len(ch) != 0 {
		t.Errorf("plan of a roamed peer: %v", ch)
	}

	// Its last handshake older than roamGrace: back to the advertised address.
	r.engine.Roam(key, natted, time.Now().Add(-roamGrace-time.Second))
	if err := r.set(t, l2, l3); err != nil {
		t.Fatal(err)
	}
	if got := endpoint(); got != advertised {
		t.Errorf("endpoint %s with a stale handshake, want the advertised %s", got, advertised)
	}

	// Roamed again, then the lease moves: the lease wins at once.
	r.engine.Roam(key, natted, time.Now())
	moved := lease(2, 51820)
	moved.Attrs.PublicIP = netip.MustParseAddr("192.168.0.222")
	if err := r.set(t, moved, l3); err != nil {
		t.Fatal(err)
	}
	if got, want := endpoint(), netip.MustParseAddrPort("192.168.0.222:51820"); got != want {
		t.Errorf("endpoint %s after the lease moved, want %s", got, want)
	}

	// A device endpoint changed by hand, with no handshake at all: reset.
	if err := r.engine.Apply([]wg.Peer{{PublicKey: key, Endpoint: natted, AllowedIPs: []netip.Prefix{moved.Subnet}}}, nil); err != nil {
		t.Fatal(err)
	}
	r.engine.Roam(key, natted, time.Time{})
	if err := r.set(t, moved, l3); err != nil {
		t.Fatal(err)
	}
	if got, want := endpoint(), netip.MustParseAddrPort("192.168.0.222:51820"); got != want {
		t.Errorf("endpoint %s after a change by hand, want %s", got, want)
	}
}
