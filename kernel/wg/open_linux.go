package wg

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// Options are what Open needs beyond the device's settings.
type Options struct {
	// Choice picks the engine (zero: Auto).
	Choice Choice
	// SocketDir is where the userspace engine serves its UAPI socket
	// (<SocketDir>/<name>.sock, for `wg show`); "" serves none. Hosts that
	// share /run (namespace hosts of a test or the lab) need one each.
	SocketDir string
	// Log receives the engine's log lines.
	Log *slog.Logger
	// NewClient opens the wgctrl client for the kernel engine (nil:
	// wgctrl.New).
	NewClient func() (Client, error)
	// NewKey says the device's private key was just made (a new node, or
	// a key rotated): peers will add the device afresh rather than wait
	// for it, so the userspace engine does not treat a re-opened TUN as a
	// plain restart (see kickAfter).
	NewKey bool
}

// Open returns an engine for the device d in the calling thread's network
// namespace, creating the device or adopting an existing one:
//
//   - an existing kernel WireGuard link keeps the kernel engine, an
//     existing TUN the userspace one (re-opened, so addresses, routes and
//     the link index stay), unless o.Choice forces the other engine; a
//     link of another type is deleted and made again;
//   - otherwise, unless o.Choice is ForceUserspace, it makes a kernel
//     WireGuard link, and falls back to userspace where the kernel cannot
//     (ForceKernel then fails with ErrNoKernelWireGuard).
//
// The device's MTU is set at creation; the caller brings it up and keeps
// its MTU, addresses and routes.
func Open(d Device, o Options) (Engine, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	choice := o.Choice
	if choice == "" {
		choice = Auto
	}
	if l, err := netlink.LinkByName(d.Name); err == nil {
		kind := l.Type()
		switch {
		case kind == "wireguard" && choice != ForceUserspace:
			log.Info("reusing the kernel WireGuard device", "device", d.Name, "index", l.Attrs().Index)
			return openKernel(d, o)
		case (kind == "tuntap" || kind == "tun") && choice != ForceKernel:
			log.Info("re-opening the persistent TUN device of the userspace engine", "device", d.Name, "index", l.Attrs().Index)
			return openUserspace(d, o, log, !o.NewKey)
		}
		log.Warn("an existing device of another kind has the WireGuard device's name; replacing it", "device", d.Name, "type", kind, "engine", choice)
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("deleting %s (type %s) to make the WireGuard device: %w", d.Name, kind, err)
		}
	}
	if choice == ForceUserspace {
		return openUserspace(d, o, log, false)
	}
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: d.Name, MTU: d.MTU}})
	if err != nil {
		if choice == ForceKernel {
			return nil, fmt.Errorf("%w: creating %s: %v", ErrNoKernelWireGuard, d.Name, err)
		}
		log.Info("the kernel cannot make a WireGuard device; using the userspace engine (wireguard-go on a TUN device)", "device", d.Name, "err", err)
		return openUserspace(d, o, log, false)
	}
	e, err := openKernel(d, o)
	if err != nil {
		if l, lerr := netlink.LinkByName(d.Name); lerr == nil {
			_ = netlink.LinkDel(l)
		}
		return nil, err
	}
	return e, nil
}

// KernelSupported reports whether the kernel can make a WireGuard link in
// the calling thread's network namespace, by making one named name and
// deleting it again; err says why not.
func KernelSupported(name string) (bool, error) {
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return false, err
	}
	if l, err := netlink.LinkByName(name); err == nil {
		_ = netlink.LinkDel(l)
	}
	return true, nil
}

func openKernel(d Device, o Options) (Engine, error) {
	newClient := o.NewClient
	if newClient == nil {
		newClient = func() (Client, error) { return wgctrl.New() }
	}
	c, err := newClient()
	if err != nil {
		return nil, fmt.Errorf("opening the WireGuard control client: %w", err)
	}
	e, err := newKernelEngine(c, d)
	if err != nil {
		c.Close()
		return nil, err
	}
	return e, nil
}

// openUserspace opens the persistent TUN and starts wireguard-go on it;
// restarted says the TUN existed and the key is the one it had (a
// restarted agent).
func openUserspace(d Device, o Options, log *slog.Logger, restarted bool) (Engine, error) {
	tdev, err := openPersistentTUN(d.Name, d.MTU)
	if err != nil {
		return nil, err
	}
	u, err := newUserspace(userspaceConfig{tun: tdev, bind: conn.NewDefaultBind(), dev: d, socketDir: o.SocketDir, restarted: restarted, log: log})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// DeleteDevice deletes the named device (kernel WireGuard link or
// persistent TUN) in the calling thread's network namespace; a missing one
// is not an error. Only an explicit teardown calls it.
func DeleteDevice(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, fmt.Errorf("deleting %s: %w", name, err)
	}
	return true, nil
}
