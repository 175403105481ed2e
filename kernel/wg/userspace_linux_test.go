package wg

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/weftnet/weft/test/netnstest"
)

// TestOpenUserspaceInNamespace: Open replaces a link of another kind that
// has the device's name with a persistent TUN, and a second Open (a
// restarted agent) re-opens the same TUN rather than making a new one.
// The link stays down, so wireguard-go never rebinds its socket from a
// thread outside the namespace.
func TestOpenUserspaceInNamespace(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "wgu")
	ns.MustExec(t, "ip", "link", "add", "flannel-wg", "type", "bridge")
	d := Device{Name: "flannel-wg", PrivateKey: key(t, 8), ListenPort: 51820, MTU: 1440}
	index := func() int {
		t.Helper()
		var i int
		if err := ns.Do(func() error {
			l, err := netlink.LinkByName("flannel-wg")
			if err == nil {
				i = l.Attrs().Index
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return i
	}
	other := index()
	var first int
	for i, choice := range []Choice{ForceUserspace, Auto} {
		if err := ns.Do(func() error {
			e, err := Open(d, Options{Choice: choice})
			if err != nil {
				return err
			}
			defer e.Close()
			if e.Kind() != Userspace {
				t.Errorf("Open(%s) = %s engine", choice, e.Kind())
			}
			return nil
		}); err != nil {
			t.Fatalf("Open(%s): %v", choice, err)
		}
		got := index()
		switch {
		case i == 0 && got == other:
			t.Errorf("the bridge was not replaced")
		case i == 0:
			first = got
		case got != first:
			t.Errorf("a second Open made a new TUN (index %d, was %d)", got, first)
		}
		out := ns.MustExec(t, "ip", "-d", "link", "show", "flannel-wg")
		if !strings.Contains(out, "tun") || !strings.Contains(out, "persist") || !strings.Contains(out, "mtu 1440") {
			t.Errorf("after Open(%s) and Close, flannel-wg is not a persistent TUN of MTU 1440:\n%s", choice, out)
		}
	}
	var deleted bool
	if err := ns.Do(func() (err error) { deleted, err = DeleteDevice("flannel-wg"); return err }); err != nil || !deleted {
		t.Fatalf("DeleteDevice = %v, %v", deleted, err)
	}
	if err := ns.Do(func() (err error) { deleted, err = DeleteDevice("flannel-wg"); return err }); err != nil || deleted {
		t.Errorf("DeleteDevice of a missing device = %v, %v", deleted, err)
	}
}
