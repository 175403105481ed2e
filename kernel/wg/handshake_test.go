package wg

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestKickAfter(t *testing.T) {
	lo, hi := key(t, 1), key(t, 2)
	for _, tc := range []struct {
		name      string
		own, peer Key
		restarted bool
		want      time.Duration
	}{
		{"lower key initiates", lo, hi, false, 0},
		{"higher key waits", hi, lo, false, kickDelay},
		{"restarted, lower key initiates", lo, hi, true, 0},
		{"restarted, higher key initiates", hi, lo, true, 0},
	} {
		if got := kickAfter(tc.own, tc.peer, tc.restarted); got != tc.want {
			t.Errorf("%s: kickAfter = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// wgEnd is one userspace engine of TestUserspaceSimultaneousAdd: a
// wireguard-go device on a channel TUN, its UDP socket on loopback.
type wgEnd struct {
	u    *userspace
	tun  *tuntest.ChannelTUN
	priv Key
	pub  Key
	addr netip.Addr
	port uint16
}

// newWGEnd starts an engine with the private key priv (nil: a new one).
func newWGEnd(t *testing.T, priv *Key, addr string, restarted bool) *wgEnd {
	t.Helper()
	if priv == nil {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		priv = &k
	}
	tn := tuntest.NewChannelTUN()
	u, err := newUserspace(userspaceConfig{tun: tn.TUN(), bind: conn.NewDefaultBind(), dev: Device{Name: "wgx", PrivateKey: *priv}, restarted: restarted})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	get, err := u.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	e := &wgEnd{u: u, tun: tn, priv: *priv, pub: priv.PublicKey(), addr: netip.MustParseAddr(addr)}
	for _, line := range strings.Split(get, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				t.Fatal(err)
			}
			e.port = uint16(p)
		}
	}
	if e.port == 0 {
		t.Fatalf("no listen port in the UAPI answer:\n%s", get)
	}
	return e
}

// peer returns e as a peer of the other end.
func (e *wgEnd) peer() Peer {
	return Peer{
		PublicKey:  e.pub,
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.port),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(e.addr, 32)},
	}
}

// handshaken reports whether e has completed a handshake with the peer pub.
func (e *wgEnd) handshaken(t *testing.T, pub Key) bool {
	t.Helper()
	ps, err := e.u.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.PublicKey == pub {
			return !p.LastHandshake.IsZero()
		}
	}
	return false
}

// send sends one packet from a to b through the tunnel and reports whether
// b's TUN received it within timeout.
func send(a, b *wgEnd, timeout time.Duration) bool {
	ping := tuntest.Ping(b.addr, a.addr)
	a.tun.Outbound <- ping
	deadline := time.After(timeout)
	for {
		select {
		case got := <-b.tun.Inbound:
			if bytes.Equal(got, ping) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// connected waits until a and b report a handshake with each other, then
// requires a packet each way to arrive within a second.
func connected(t *testing.T, a, b *wgEnd) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !(a.handshaken(t, b.pub) && b.handshaken(t, a.pub)) {
		if time.Now().After(deadline) {
			t.Fatalf("no handshake on both ends within 3s (a %v, b %v)", a.handshaken(t, b.pub), b.handshaken(t, a.pub))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !send(a, b, time.Second) || !send(b, a, time.Second) {
		t.Fatalf("a packet was not delivered within 1s after both ends reported a handshake")
	}
}

// atOnce runs the applies at the same moment and waits for them.
func atOnce(t *testing.T, applies ...func() error) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, f := range applies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := f(); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
}

// pair starts two engines that have each other as peers, connected.
func pair(t *testing.T) (a, b *wgEnd) {
	t.Helper()
	a = newWGEnd(t, nil, "10.99.0.1", false)
	b = newWGEnd(t, nil, "10.99.0.2", false)
	if err := a.u.Apply([]Peer{b.peer()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.u.Apply([]Peer{a.peer()}, nil); err != nil {
		t.Fatal(err)
	}
	connected(t, a, b)
	return a, b
}

// TestUserspaceSimultaneousAdd: two userspace engines that add each other
// at the same moment (nodes that start together) end with one working
// session in both directions, every time. When both ends started a
// handshake at once, the initiations crossed and wireguard-go's concurrent
// handshake workers left one direction dead until its 15 s data timeout
// (TestLabWireGuard failed about one run in ten that way).
func TestUserspaceSimultaneousAdd(t *testing.T) {
	for round := range 25 {
		t.Logf("round %d", round)
		a := newWGEnd(t, nil, "10.99.0.1", false)
		b := newWGEnd(t, nil, "10.99.0.2", false)
		atOnce(t,
			func() error { return a.u.Apply([]Peer{b.peer()}, nil) },
			func() error { return b.u.Apply([]Peer{a.peer()}, nil) })
		connected(t, a, b)
		a.u.Close()
		b.u.Close()
	}
}

// TestUserspaceNewKey: a node restarted with a new key (a rotated key
// file) initiates to its peer while the peer, learning the new key from
// the lease, replaces the old one at the same moment: one working session
// each way, every time.
func TestUserspaceNewKey(t *testing.T) {
	for round := range 15 {
		t.Logf("round %d", round)
		a, b := pair(t)
		a.u.Close()
		time.Sleep(2 * device.HandshakeInitationRate)
		// A new key: Open does not take the re-opened TUN for a restart.
		a2 := newWGEnd(t, nil, "10.99.0.1", false)
		atOnce(t,
			func() error { return a2.u.Apply([]Peer{b.peer()}, nil) },
			func() error { return b.u.Apply([]Peer{a2.peer()}, []Key{a.pub}) })
		connected(t, a2, b)
		a2.u.Close()
		b.u.Close()
	}
}

// TestUserspaceRestartKicks: an engine that re-opened its TUN with the key
// it had (a restarted agent) starts a handshake to its peers at once,
// whichever key is lower: the peer, which holds a session with the previous
// process and adds nothing, switches to the new session without waiting
// for its timers.
func TestUserspaceRestartKicks(t *testing.T) {
	for round := range 10 {
		t.Logf("round %d", round)
		a, b := pair(t)
		a.u.Close()
		// b takes one initiation from a peer per HandshakeInitationRate;
		// an agent's restart takes longer.
		time.Sleep(2 * device.HandshakeInitationRate)
		a2 := newWGEnd(t, &a.priv, "10.99.0.1", true)
		start := time.Now()
		if err := a2.u.Apply([]Peer{b.peer()}, nil); err != nil {
			t.Fatal(err)
		}
		for !a2.handshaken(t, b.pub) {
			if time.Since(start) > kickDelay {
				t.Fatalf("round %d: the restarted engine has no handshake with its peer after %s", round, time.Since(start))
			}
			time.Sleep(5 * time.Millisecond)
		}
		connected(t, a2, b)
		a2.u.Close()
		b.u.Close()
	}
}

// TestUserspaceRoams: the engine moves a peer's endpoint to the source of
// an authenticated packet from it, and reports the new endpoint and a
// recent handshake through Peers. This is what Fake.Roam stands for and
// what the wireguard backend keeps (backend/wireguard roamed): here the
// peer's packets come from [::1] instead of 127.0.0.1, as a node's do
// after its NAT mapping changed.
func TestUserspaceRoams(t *testing.T) {
	a, b := pair(t)
	viaV6 := a.peer()
	viaV6.Endpoint = netip.AddrPortFrom(netip.IPv6Loopback(), a.port)
	if err := b.u.Apply([]Peer{viaV6}, nil); err != nil {
		t.Fatal(err)
	}
	if !send(b, a, time.Second) {
		t.Fatal("a packet from b's new address was not delivered")
	}
	want := netip.AddrPortFrom(netip.IPv6Loopback(), b.port)
	ps, err := a.u.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.PublicKey != b.pub {
			continue
		}
		if p.Endpoint != want {
			t.Errorf("a's endpoint of b is %s after b's packet from %s, want it roamed there", p.Endpoint, want)
		}
		if age := time.Since(p.LastHandshake); p.LastHandshake.IsZero() || age > time.Minute {
			t.Errorf("a's last handshake with b: %v (%s ago), want a recent one", p.LastHandshake, age)
		}
		return
	}
	t.Fatalf("a has no peer %s", b.pub)
}
