package wg

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func key(t testing.TB, b byte) Key {
	t.Helper()
	var k Key
	for i := range k {
		k[i] = b
	}
	return k
}

func TestParseChoice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Choice
		ok   bool
	}{
		{"", Auto, true}, {"auto", Auto, true}, {"Kernel", ForceKernel, true}, {"USERSPACE", ForceUserspace, true},
		{"wireguard-go", "", false}, {"boringtun", "", false},
	} {
		got, err := ParseChoice(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseChoice(%q) = %q, %v", tc.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseChoice(%q) error does not name the input: %v", tc.in, err)
		}
	}
}

func TestPeersSetAndParseGet(t *testing.T) {
	k1, k2, psk := key(t, 1), key(t, 2), key(t, 9)
	set := peersSet([]Peer{{
		PublicKey: k1, PresharedKey: psk, Endpoint: netip.MustParseAddrPort("192.168.1.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Keepalive: 25 * time.Second,
	}}, []Key{k2})
	want := "public_key=" + strings.Repeat("01", 32) + "\npreshared_key=" + strings.Repeat("09", 32) +
		"\nendpoint=192.168.1.2:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.244.2.0/24\n" +
		"public_key=" + strings.Repeat("02", 32) + "\nremove=true\n"
	if set != want {
		t.Errorf("peersSet =\n%s\nwant\n%s", set, want)
	}
	get := "private_key=" + strings.Repeat("aa", 32) + "\nlisten_port=51820\n" +
		"public_key=" + strings.Repeat("02", 32) + "\npreshared_key=" + strings.Repeat("00", 32) + "\nprotocol_version=1\n" +
		"endpoint=[::ffff:192.168.1.3]:51820\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n" +
		"persistent_keepalive_interval=0\nallowed_ip=10.244.3.0/24\nallowed_ip=10.244.30.0/24\n" +
		"public_key=" + strings.Repeat("01", 32) + "\npreshared_key=" + strings.Repeat("09", 32) + "\nprotocol_version=1\n" +
		"endpoint=192.168.1.2:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"persistent_keepalive_interval=25\nallowed_ip=10.244.2.0/24\nerrno=0\n\n"
	peers, err := parseGet(get)
	if err != nil {
		t.Fatal(err)
	}
	wantPeers := []Peer{
		{PublicKey: k1, PresharedKey: psk, Endpoint: netip.MustParseAddrPort("192.168.1.2:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Keepalive: 25 * time.Second, LastHandshake: time.Unix(1700000000, 5)},
		{PublicKey: k2, Endpoint: netip.MustParseAddrPort("192.168.1.3:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("10.244.30.0/24")}},
	}
	if len(peers) != len(wantPeers) {
		t.Fatalf("parseGet = %v", peers)
	}
	for i := range peers {
		if !peers[i].SameConfig(wantPeers[i]) || !peers[i].LastHandshake.Equal(wantPeers[i].LastHandshake) {
			t.Errorf("peer %d = %+v, want %+v", i, peers[i], wantPeers[i])
		}
	}
	for _, bad := range []string{"public_key=zz\n", "public_key=" + strings.Repeat("01", 32) + "\nendpoint=nowhere\n", "garbage\n"} {
		if _, err := parseGet(bad); err == nil {
			t.Errorf("parseGet(%q) accepted it", bad)
		}
	}
}

// nullBind is a conn.Bind that keeps endpoints as given and drops what is
// sent, so that wireguard-go runs in a test without a socket.
type nullBind struct {
	mu     sync.Mutex
	closed chan struct{}
}

type nullEndpoint netip.AddrPort

func (e nullEndpoint) ClearSrc()           {}
func (e nullEndpoint) SrcToString() string { return "" }
func (e nullEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e nullEndpoint) DstToBytes() []byte  { b, _ := netip.AddrPort(e).MarshalBinary(); return b }
func (e nullEndpoint) DstIP() netip.Addr   { return netip.AddrPort(e).Addr() }
func (e nullEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func (b *nullBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	closed := make(chan struct{})
	b.closed = closed
	recv := func([][]byte, []int, []conn.Endpoint) (int, error) {
		<-closed
		return 0, net.ErrClosed
	}
	return []conn.ReceiveFunc{recv}, port, nil
}

func (b *nullBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		close(b.closed)
		b.closed = nil
	}
	return nil
}

func (b *nullBind) SetMark(uint32) error               { return nil }
func (b *nullBind) Send([][]byte, conn.Endpoint) error { return nil }
func (b *nullBind) BatchSize() int                     { return 1 }
func (b *nullBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	return nullEndpoint(ap), err
}

// TestEngineContract applies one sequence of peer changes to the fake and
// to the userspace engine (wireguard-go on an in-memory TUN) and expects
// the same peers from both after every step: the fake that the backend's
// tests trust behaves like the engine.
func TestEngineContract(t *testing.T) {
	k1, k2, k3, psk := key(t, 1), key(t, 2), key(t, 3), key(t, 7)
	pfx := netip.MustParsePrefix
	ep := netip.MustParseAddrPort
	steps := []struct {
		name   string
		set    []Peer
		remove []Key
		want   []Peer
	}{
		{"add two", []Peer{
			{PublicKey: k1, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
			{PublicKey: k2, PresharedKey: psk, Endpoint: ep("192.168.1.3:51821"), AllowedIPs: []netip.Prefix{pfx("10.244.3.0/24")}, Keepalive: 25 * time.Second},
		}, nil, []Peer{
			{PublicKey: k1, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
			{PublicKey: k2, PresharedKey: psk, Endpoint: ep("192.168.1.3:51821"), AllowedIPs: []netip.Prefix{pfx("10.244.3.0/24")}, Keepalive: 25 * time.Second},
		}},
		{"update k2: new endpoint, no psk, no keepalive", []Peer{
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.3.0/24")}},
		}, nil, []Peer{
			{PublicKey: k1, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.3.0/24")}},
		}},
		{"k3 takes k1's subnet (a rotated key), then k1 goes", []Peer{
			{PublicKey: k3, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
		}, []Key{k1}, []Peer{
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.3.0/24")}},
			{PublicKey: k3, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
		}},
		{"allowed IPs replaced", []Peer{
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.4.0/24"), pfx("10.244.5.0/24")}},
		}, nil, []Peer{
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.4.0/24"), pfx("10.244.5.0/24")}},
			{PublicKey: k3, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
		}},
		{"a peer stealing another's allowed IP", []Peer{
			{PublicKey: k3, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("10.244.5.0/24")}},
		}, nil, []Peer{
			{PublicKey: k2, Endpoint: ep("192.168.1.33:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.4.0/24")}},
			{PublicKey: k3, Endpoint: ep("192.168.1.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("10.244.5.0/24")}},
		}},
		{"remove all, and an unknown key", nil, []Key{k2, k3, k1}, nil},
	}
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	engines := map[string]func(t *testing.T) Engine{
		"fake": func(*testing.T) Engine { return NewFake(Userspace) },
		"userspace": func(t *testing.T) Engine {
			u, err := newUserspace(userspaceConfig{tun: tuntest.NewChannelTUN().TUN(), bind: &nullBind{}, dev: Device{Name: "wgtest", PrivateKey: priv, ListenPort: 51820}})
			if err != nil {
				t.Fatal(err)
			}
			return u
		},
	}
	for name, mk := range engines {
		t.Run(name, func(t *testing.T) {
			e := mk(t)
			defer e.Close()
			for _, st := range steps {
				if err := e.Apply(st.set, st.remove); err != nil {
					t.Fatalf("%s: Apply: %v", st.name, err)
				}
				got, err := e.Peers()
				if err != nil {
					t.Fatal(err)
				}
				if !samePeers(got, st.want) {
					t.Fatalf("%s: peers\n%v\nwant\n%v", st.name, got, st.want)
				}
			}
		})
	}
}

func samePeers(a, b []Peer) bool {
	return slices.EqualFunc(a, b, func(x, y Peer) bool { return x.SameConfig(y) })
}

// TestUserspaceUAPISocket serves the UAPI in a directory of the test's
// own and reads the device through it as `wg show` would.
func TestUserspaceUAPISocket(t *testing.T) {
	dir := t.TempDir()
	priv := key(t, 5)
	d := Device{Name: "wgsock", PrivateKey: priv, ListenPort: 51999}
	u, err := newUserspace(userspaceConfig{tun: tuntest.NewChannelTUN().TUN(), bind: &nullBind{}, dev: d, socketDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Apply([]Peer{{PublicKey: key(t, 1), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}}}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", dir+"/wgsock.sock")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !strings.Contains(b.String(), "errno=") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reading the UAPI answer: %v (so far %q)", err, b.String())
		}
		b.Write(buf[:n])
	}
	c.Close()
	for _, want := range []string{"listen_port=51999", "public_key=" + strings.Repeat("01", 32), "allowed_ip=10.244.9.0/24", "errno=0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("UAPI answer lacks %q:\n%s", want, b.String())
		}
	}
	// Read from outside, as weft doctor does.
	peers, err := uapiPeers(dir + "/wgsock.sock")
	if err != nil || len(peers) != 1 || peers[0].PublicKey != key(t, 1) || peers[0].AllowedIPs[0].String() != "10.244.9.0/24" {
		t.Errorf("uapiPeers = %v, %v", peers, err)
	}
	if _, err := uapiPeers(dir + "/nothing.sock"); err == nil || !strings.Contains(err.Error(), "is weftd running") {
		t.Errorf("uapiPeers of a missing socket = %v", err)
	}
	// A second engine on the same socket is refused while the first lives.
	if _, err := newUserspace(userspaceConfig{tun: tuntest.NewChannelTUN().TUN(), bind: &nullBind{}, dev: d, socketDir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second engine on one socket: %v", err)
	}
	u.Close()
	// A stale socket file (an agent killed) is replaced.
	u2, err := newUserspace(userspaceConfig{tun: tuntest.NewChannelTUN().TUN(), bind: &nullBind{}, dev: d, socketDir: dir})
	if err != nil {
		t.Fatalf("after close: %v", err)
	}
	u2.Close()
}

// fakeClient records the configuration calls of the kernel engine.
type fakeClient struct {
	calls  []wgtypes.Config
	device *wgtypes.Device
	fail   error
	closed bool
}

func (f *fakeClient) Device(name string) (*wgtypes.Device, error) {
	if f.device == nil {
		return nil, errors.New("no such device")
	}
	return f.device, nil
}

func (f *fakeClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	if name != "flannel-wg" {
		return errors.New("wrong device " + name)
	}
	f.calls = append(f.calls, cfg)
	return f.fail
}

func (f *fakeClient) Close() error { f.closed = true; return nil }

func TestKernelEngineCalls(t *testing.T) {
	c := &fakeClient{}
	priv, k1, k2, psk := key(t, 4), key(t, 1), key(t, 2), key(t, 7)
	e, err := newKernelEngine(c, Device{Name: "flannel-wg", PrivateKey: priv, ListenPort: 51820, MTU: 1440})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.calls) != 1 || *c.calls[0].PrivateKey != priv || *c.calls[0].ListenPort != 51820 || c.calls[0].ReplacePeers || len(c.calls[0].Peers) != 0 {
		t.Fatalf("device configuration = %+v, want the key and port only, keeping the peers", c.calls)
	}
	c.calls = nil
	err = e.Apply([]Peer{{PublicKey: k1, PresharedKey: psk, Endpoint: netip.MustParseAddrPort("192.168.1.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Keepalive: 25 * time.Second}}, []Key{k2})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.calls) != 2 {
		t.Fatalf("Apply made %d calls, want 2 (set, then remove): %+v", len(c.calls), c.calls)
	}
	set, rm := c.calls[0], c.calls[1]
	if set.ReplacePeers || set.PrivateKey != nil || set.ListenPort != nil || len(set.Peers) != 1 {
		t.Fatalf("set call = %+v", set)
	}
	p := set.Peers[0]
	if p.PublicKey != k1 || p.Remove || p.UpdateOnly || *p.PresharedKey != psk || *p.PersistentKeepaliveInterval != 25*time.Second ||
		!p.ReplaceAllowedIPs || p.Endpoint.String() != "192.168.1.2:51820" || len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.244.2.0/24" {
		t.Errorf("peer config = %+v", p)
	}
	if len(rm.Peers) != 1 || rm.Peers[0].PublicKey != k2 || !rm.Peers[0].Remove || rm.ReplacePeers {
		t.Errorf("remove call = %+v", rm)
	}
	// A peer without PSK or keepalive clears them (non-nil zero values).
	c.calls = nil
	if err := e.Apply([]Peer{{PublicKey: k1, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}}, nil); err != nil {
		t.Fatal(err)
	}
	if p := c.calls[0].Peers[0]; p.PresharedKey == nil || *p.PresharedKey != (Key{}) || p.PersistentKeepaliveInterval == nil || *p.PersistentKeepaliveInterval != 0 || p.Endpoint != nil {
		t.Errorf("clearing peer config = %+v", p)
	}
	// Peers converts what the kernel reports.
	c.device = &wgtypes.Device{Name: "flannel-wg", Peers: []wgtypes.Peer{{
		PublicKey: k1, PresharedKey: psk, Endpoint: &net.UDPAddr{IP: net.ParseIP("192.168.1.2"), Port: 51820},
		PersistentKeepaliveInterval: 25 * time.Second, LastHandshakeTime: time.Unix(1700000000, 0),
		AllowedIPs: []net.IPNet{{IP: net.ParseIP("10.244.2.0"), Mask: net.CIDRMask(24, 32)}},
	}}}
	got, err := e.Peers()
	if err != nil {
		t.Fatal(err)
	}
	want := Peer{PublicKey: k1, PresharedKey: psk, Endpoint: netip.MustParseAddrPort("192.168.1.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Keepalive: 25 * time.Second}
	if len(got) != 1 || !got[0].SameConfig(want) || !got[0].LastHandshake.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("Peers = %+v, want %+v", got, want)
	}
	// Failures are reported with the device.
	c.fail = errors.New("boom")
	if err := e.Apply([]Peer{{PublicKey: k1}}, nil); err == nil || !strings.Contains(err.Error(), "flannel-wg") {
		t.Errorf("failing Apply = %v", err)
	}
	e.Close()
	if !c.closed {
		t.Error("Close did not close the client")
	}
}

func TestOnceEvery(t *testing.T) {
	o := &onceEvery{every: time.Hour, last: map[string]time.Time{}}
	if !o.due("a %v") || o.due("a %v") || !o.due("b %v") {
		t.Error("each kind is due once per period")
	}
	o.last["a %v"] = time.Now().Add(-2 * time.Hour)
	if !o.due("a %v") {
		t.Error("a kind is due again after the period")
	}
}
