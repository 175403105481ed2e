package netnstest

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func TestLinkName(t *testing.T) {
	for _, p := range []string{"", "wbr", "averylongprefix"} {
		n := LinkName(p)
		if len(n) != 15 {
			t.Errorf("LinkName(%q) = %q: want 15 characters", p, n)
		}
		if a, b := LinkName(p), LinkName(p); a == b {
			t.Errorf("LinkName(%q) twice gave %q", p, a)
		}
	}
}

func TestSwitchPingAndDo(t *testing.T) {
	SkipUnlessRoot(t)
	sw := NewSwitch(t)
	a, b := NewNS(t, "a"), NewNS(t, "b")
	sw.Join(t, a, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	sw.Join(t, b, "eth0", netip.MustParsePrefix("192.0.2.2/24"))
	if err := a.PingWithin(netip.MustParseAddr("192.0.2.2"), 10*time.Second); err != nil {
		t.Fatalf("ping across the switch: %v", err)
	}
	pod := NewNS(t, "pod")
	NewVeth(t, a, "vpod", netip.MustParsePrefix("10.9.0.1/24"), pod, "eth0", netip.MustParsePrefix("10.9.0.2/24"))
	if err := a.PingWithin(netip.MustParseAddr("10.9.0.2"), 10*time.Second); err != nil {
		t.Fatalf("ping over the veth: %v", err)
	}
	root, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	err = a.Do(func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		if cur.Equal(root) {
			t.Error("Do ran fn in the root namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	links := a.MustExec(t, "ip", "-o", "link")
	if !strings.Contains(links, "eth0") {
		t.Errorf("host links %q lack eth0", links)
	}
}

func TestBridge(t *testing.T) {
	SkipUnlessRoot(t)
	br := NewBridge(t)
	a, b := NewNS(t, "a"), NewNS(t, "b")
	br.Join(t, a, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	br.Join(t, b, "eth0", netip.MustParsePrefix("192.0.2.2/24"))
	if err := b.PingWithin(netip.MustParseAddr("192.0.2.1"), 10*time.Second); err != nil {
		t.Fatalf("ping across the root bridge: %v", err)
	}
}

// EnableForwarding changes the namespace's own sysctl, not the root
// namespace's nor another namespace's.
func TestEnableForwardingStaysInside(t *testing.T) {
	SkipUnlessRoot(t)
	rootBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	a, b := NewNS(t, "fwa"), NewNS(t, "fwb")
	if v, err := a.ReadSysctl("net/ipv4/ip_forward"); err != nil || v != "0" {
		t.Fatalf("ip_forward in a new namespace = %q, %v; want 0", v, err)
	}
	a.EnableForwarding(t)
	if v, err := a.ReadSysctl("net/ipv4/ip_forward"); err != nil || v != "1" {
		t.Errorf("ip_forward after EnableForwarding = %q, %v; want 1", v, err)
	}
	if v := strings.TrimSpace(a.MustExec(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
		t.Errorf("ip_forward seen by a process in the namespace = %q, want 1", v)
	}
	if v, err := b.ReadSysctl("net/ipv4/ip_forward"); err != nil || v != "0" {
		t.Errorf("ip_forward in another namespace = %q, %v; want 0", v, err)
	}
	if rootAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(rootAfter) != string(rootBefore) {
		t.Errorf("the root namespace's ip_forward changed from %q to %q", rootBefore, rootAfter)
	}
}
