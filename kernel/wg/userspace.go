package wg

import (
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

// userspace is the wireguard-go engine: a device.Device in this process on
// a TUN device, configured through its in-process UAPI (IpcSet/IpcGet), and
// optionally served on a UAPI socket so that `wg show` works.
type userspace struct {
	name string
	dev  *device.Device
	log  *slog.Logger

	ln     net.Listener // the UAPI socket, or nil
	sock   string
	closed sync.Once
	done   chan struct{} // closed when the UAPI accept loop returned
}

// newUserspace starts wireguard-go on tdev with bind, gives it d's key and
// port, and brings it up. With socketDir, it serves the UAPI on
// <socketDir>/<name>.sock.
func newUserspace(name string, tdev tun.Device, bind conn.Bind, d Device, socketDir string, log *slog.Logger) (*userspace, error) {
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
	u := &userspace{name: name, dev: device.NewDevice(tdev, bind, logger), log: log, done: make(chan struct{})}
	if err := u.dev.IpcSet(deviceSet(d)); err != nil {
		u.dev.Close()
		return nil, fmt.Errorf("configuring wireguard-go on %s (listen port %d): %w", name, d.ListenPort, err)
	}
	if err := u.dev.Up(); err != nil {
		u.dev.Close()
		return nil, fmt.Errorf("bringing wireguard-go on %s up (listen port %d): %w", name, d.ListenPort, err)
	}
	if socketDir == "" {
		close(u.done)
		return u, nil
	}
	if err := u.serveUAPI(socketDir); err != nil {
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

// Apply implements Engine. Peers it adds get a handshake at once (a
// keepalive staged without a session starts one, and the keepalive that
// follows confirms the session to the peer), so that a restarted agent's
// peers switch to the new session within a round trip instead of after
// their own rekey timeout.
func (u *userspace) Apply(set []Peer, remove []Key) error {
	if len(set) == 0 && len(remove) == 0 {
		return nil
	}
	var fresh []Key
	for _, p := range set {
		if u.dev.LookupPeer(device.NoisePublicKey(p.PublicKey)) == nil {
			fresh = append(fresh, p.PublicKey)
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
	for _, k := range fresh {
		if p := u.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
			p.SendKeepalive()
		}
	}
	return errors.Join(errs...)
}

// Close implements Engine: it stops serving the UAPI and stops
// wireguard-go, which closes its TUN file descriptor; a persistent TUN
// stays.
func (u *userspace) Close() error {
	u.closed.Do(func() {
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
