package wg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/weftnet/weft/test/netnstest"
)

// kernelWireGuard reports whether the kernel can make a WireGuard link, by
// trying in ns.
func kernelWireGuard(t *testing.T, ns *netnstest.NS) (bool, error) {
	t.Helper()
	var ok bool
	var why error
	if err := ns.Do(func() error {
		ok, why = KernelSupported("wgprobe0")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok, why
}

// TestKernelEngineNamespace drives the kernel engine against the kernel's
// WireGuard in a namespace: the device made, its peers set and removed, and
// an engine closed and opened again finding the peers in place.
//
// Where the kernel has no WireGuard (no wireguard link type) it checks
// that forcing the kernel engine fails clearly, then skips, by name: this
// is the one skip scripts/test-skips.txt allows in this package, and the
// kernel engine's configuration calls are then covered by
// TestKernelEngineCalls only.
func TestKernelEngineNamespace(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "wgk")
	if ok, why := kernelWireGuard(t, ns); !ok {
		// Forcing the kernel engine fails clearly and leaves no device.
		err := ns.Do(func() error {
			_, err := Open(Device{Name: "flannel-wg", PrivateKey: key(t, 8), ListenPort: 51820, MTU: 1440}, Options{Choice: ForceKernel})
			return err
		})
		if !errors.Is(err, ErrNoKernelWireGuard) || !strings.Contains(err.Error(), "flannel-wg") {
			t.Errorf("Open(ForceKernel) = %v, want ErrNoKernelWireGuard naming the device", err)
		}
		if out, err := ns.Exec("ip", "link", "show", "flannel-wg"); err == nil {
			t.Errorf("a device was left behind: %s", out)
		}
		t.Skipf("this kernel has no WireGuard (ip link add type wireguard: %v); the kernel engine is covered by TestKernelEngineCalls only", why)
	}
	priv, k1, k2 := key(t, 8), key(t, 1), key(t, 2)
	d := Device{Name: "flannel-wg", PrivateKey: priv, ListenPort: 51820, MTU: 1440}
	peers := []Peer{
		{PublicKey: k1, Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Keepalive: 25 * time.Second},
		{PublicKey: k2, Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}},
	}
	err := ns.Do(func() error {
		e, err := Open(d, Options{Choice: ForceKernel})
		if err != nil {
			return err
		}
		if e.Kind() != Kernel {
			t.Errorf("engine %s, want kernel", e.Kind())
		}
		if err := e.Apply(peers, nil); err != nil {
			return err
		}
		e.Close()
		// Adopted by a new engine (a restarted agent), peers in place.
		e, err = Open(d, Options{})
		if err != nil {
			return err
		}
		defer e.Close()
		got, err := e.Peers()
		if err != nil {
			return err
		}
		SortPeers(peers)
		if !samePeers(got, peers) {
			t.Errorf("peers after reopening: %v, want %v", got, peers)
		}
		if err := e.Apply(nil, []Key{k1}); err != nil {
			return err
		}
		got, _ = e.Peers()
		if len(got) != 1 || got[0].PublicKey != k2 {
			t.Errorf("peers after removing one: %v", got)
		}
		l, err := netlink.LinkByName("flannel-wg")
		if err != nil || l.Type() != "wireguard" || l.Attrs().MTU != 1440 {
			t.Errorf("device: %v %v", l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
