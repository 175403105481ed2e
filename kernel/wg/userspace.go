package wg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

var _ Engine = (*userspace)(nil)

// kickDelay is how long an end waits before it starts a handshake to a
// peer it added, when it is not the one to start at once (see kickAfter):
// long enough for the other end's handshake, which takes a round trip and
// two Curve25519 operations on each end, to complete first.
const kickDelay = 250 * time.Millisecond

// userspace is the wireguard-go engine: a device.Device in this process on
// a TUN device, configured through its in-process UAPI (IpcSet/IpcGet), and
// optionally served on a UAPI socket so that `wg show` works.
type userspace struct {
	name string
	dev  *device.Device
	log  *slog.Logger
	pub  Key

	// restarted says the engine re-opened a persistent TUN with the key
	// it had (an agent restart) and has not applied peers yet; Apply
	// clears it.
	restarted bool
	// kicks are the delayed handshakes not yet started; stop ends them.
	kicks sync.WaitGroup
	stop  chan struct{}

	ln     net.Listener // the UAPI socket, or nil
	sock   string
	closed sync.Once
	done   chan struct{} // closed when the UAPI accept loop returned
}

// userspaceConfig is what newUserspace starts wireguard-go with.
type userspaceConfig struct {
	tun  tun.Device
	bind conn.Bind
	dev  Device
	// socketDir, when set, is where the UAPI is served, on
	// <socketDir>/<name>.sock.
	socketDir string
	// restarted says tun is a persistent TUN re-opened after an agent
	// restart (see kickAfter).
	restarted bool
	log       *slog.Logger
}

// newUserspace starts wireguard-go on c.tun with c.bind, gives it the
// device's key and port, brings it up and, with a socket directory, serves
// its UAPI there.
func newUserspace(c userspaceConfig) (*userspace, error) {
	name, d, log := c.dev.Name, c.dev, c.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wlog := log.With("wireguard-go", name)
	errs := &onceEvery{every: time.Minute, last: map[string]time.Time{}}
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) {
			if wlog.Enabled(context.Background(), slog.LevelDebug) {
				wlog.Debug(fmt.Sprintf(format, args...))
			}
		},
		// wireguard-go reports per-packet failures as errors (a handshake
		// to an unreachable peer, every 5 s per peer): each kind once a
		// minute at warning level, the rest at debug level.
		Errorf: func(format string, args ...any) {
			level := slog.LevelDebug
			if errs.due(format) {
				level = slog.LevelWarn
			}
			if wlog.Enabled(context.Background(), level) {
				wlog.Log(context.Background(), level, fmt.Sprintf(format, args...))
			}
		},
	}
	u := &userspace{
		name:      name,
		dev:       device.NewDevice(c.tun, c.bind, logger),
		log:       log,
		pub:       d.PrivateKey.PublicKey(),
		restarted: c.restarted,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := u.dev.IpcSet(deviceSet(d)); err != nil {
		u.dev.Close()
		return nil, fmt.Errorf("configuring wireguard-go on %s (listen port %d): %w", name, d.ListenPort, err)
	}
	if err := u.dev.Up(); err != nil {
		u.dev.Close()
		return nil, fmt.Errorf("bringing wireguard-go on %s up (listen port %d): %w", name, d.ListenPort, err)
	}
	if c.socketDir == "" {
		close(u.done)
		return u, nil
	}
	if err := u.serveUAPI(c.socketDir); err != nil {
		u.dev.Close()
		return nil, err
	}
	return u, nil
}

// serveUAPI listens on <dir>/<name>.sock (replacing a stale socket left by
// a killed agent) and serves wireguard-go's UAPI there.
func (u *userspace) serveUAPI(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("WireGuard UAPI socket directory %s: %w", dir, err)
	}
	u.sock = filepath.Join(dir, u.name+".sock")
	if c, err := net.Dial("unix", u.sock); err == nil {
		c.Close()
		return fmt.Errorf("WireGuard UAPI socket %s is in use by another process (another agent on this host? give each its own socket directory)", u.sock)
	}
	if err := os.Remove(u.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the stale WireGuard UAPI socket %s: %w", u.sock, err)
	}
	ln, err := net.Listen("unix", u.sock)
	if err != nil {
		return fmt.Errorf("WireGuard UAPI socket %s: %w", u.sock, err)
	}
	if err := os.Chmod(u.sock, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("WireGuard UAPI socket %s: %w", u.sock, err)
	}
	u.ln = ln
	go func() {
		defer close(u.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.dev.IpcHandle(c)
		}
	}()
	return nil
}

// Kind implements Engine.
func (u *userspace) Kind() Kind { return Userspace }

// Peers implements Engine.
func (u *userspace) Peers() ([]Peer, error) {
	s, err := u.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("reading the peers of %s from wireguard-go: %w", u.name, err)
	}
	return parseGet(s)
}

// Apply implements Engine. It starts a handshake to the peers it adds (a
// keepalive staged without a session starts one, and the keepalive that
// follows confirms the session to the peer): at once, or after a delay
// that lets the peer's own handshake complete first, as kickAfter decides;
// once a session exists, the delayed kick only sends a keepalive on it. A
// restarted agent's peers so switch to its new sessions within a round
// trip instead of after their own timeouts.
func (u *userspace) Apply(set []Peer, remove []Key) error {
	if len(set) == 0 && len(remove) == 0 {
		return nil
	}
	restarted := u.restarted
	u.restarted = false
	kicks := map[time.Duration][]Key{}
	for _, p := range set {
		if u.dev.LookupPeer(device.NoisePublicKey(p.PublicKey)) == nil {
			d := kickAfter(u.pub, p.PublicKey, restarted)
			kicks[d] = append(kicks[d], p.PublicKey)
		}
	}
	// One operation per peer, so that one bad peer does not keep the
	// others out (IpcSet stops at the first error).
	var errs []error
	for _, p := range set {
		if err := u.dev.IpcSet(peersSet([]Peer{p}, nil)); err != nil {
			errs = append(errs, fmt.Errorf("wireguard-go %s: setting %s: %w", u.name, p, err))
		}
	}
	if len(remove) > 0 {
		if err := u.dev.IpcSet(peersSet(nil, remove)); err != nil {
			errs = append(errs, fmt.Errorf("wireguard-go %s: removing %d peers: %w", u.name, len(remove), err))
		}
	}
	for d, keys := range kicks {
		if d == 0 {
			u.kick(keys)
			continue
		}
		u.kicks.Add(1)
		go func() {
			defer u.kicks.Done()
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				u.kick(keys)
			case <-u.stop:
			}
		}()
	}
	return errors.Join(errs...)
}

// kick starts a handshake to each of the peers that is still configured.
func (u *userspace) kick(keys []Key) {
	for _, k := range keys {
		if p := u.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
			p.SendKeepalive()
		}
	}
}

// kickAfter returns how long the end with the public key own waits before
// it starts the handshake to a peer it adds.
//
// Two ends that add each other at the same moment (nodes that start
// together, a node that joins or comes back with a new key while the
// others learn its lease) must not both initiate: when the initiations
// cross, wireguard-go's handshake workers can process one end's initiation
// and response concurrently and leave the other end with a session it
// sends on but this end cannot decrypt, until wireguard-go's 15 s data
// timeout starts a new handshake. So the end with the lower public key
// initiates at once and the other waits kickDelay. An agent restarted with
// the key it had (restarted) initiates to every peer at once: its peers
// know its key, add nothing and hold sessions with the previous process.
func kickAfter(own, peer Key, restarted bool) time.Duration {
	if restarted || bytes.Compare(own[:], peer[:]) < 0 {
		return 0
	}
	return kickDelay
}

// Close implements Engine: it stops serving the UAPI and stops
// wireguard-go, which closes its TUN file descriptor; a persistent TUN
// stays.
func (u *userspace) Close() error {
	u.closed.Do(func() {
		close(u.stop)
		u.kicks.Wait()
		if u.ln != nil {
			u.ln.Close()
		}
		<-u.done
		u.dev.Close()
	})
	return nil
}

// onceEvery tells whether a kind of message is due again: at most once
// every period per kind.
type onceEvery struct {
	mu    sync.Mutex
	every time.Duration
	last  map[string]time.Time
}

func (o *onceEvery) due(kind string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if t, ok := o.last[kind]; ok && now.Sub(t) < o.every {
		return false
	}
	o.last[kind] = now
	return true
}
