package labbench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/ops/lab"
)

// TestFloor builds each hand-made path (VXLAN, and host-gw's routed one)
// between two namespaces joined by a veth pair (each end eth0, like a lab
// host's), checks it has the shape the bench claims, that its legs carry
// traffic, and that dropFloor leaves nothing behind.
func TestFloor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestFloor makes network namespaces: run it as root")
	}
	for _, hostgw := range []bool{false, true} {
		t.Run(map[bool]string{false: "vxlan", true: "host-gw"}[hostgw], func(t *testing.T) { testFloor(t, hostgw) })
	}
}

func testFloor(t *testing.T, hostgw bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("lbf%d", os.Getpid()%100000)
	hosts := []lab.Host{
		{Name: "host1", NS: prefix + "-host1", Addr: netip.MustParseAddr("198.51.100.1")},
		{Name: "host2", NS: prefix + "-host2", Addr: netip.MustParseAddr("198.51.100.2")},
	}
	for _, h := range hosts {
		t.Cleanup(func() {
			_ = exec.Command("ip", "netns", "del", floorPodNS(h)).Run()
			_ = exec.Command("ip", "netns", "del", h.NS).Run()
		})
		mustRun(t, ctx, "ip", "netns", "add", h.NS)
	}
	mustRun(t, ctx, "ip", "-n", hosts[0].NS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", hosts[1].NS)
	for _, h := range hosts {
		mustRun(t, ctx, "ip", "-n", h.NS, "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
		mustRun(t, ctx, "ip", "-n", h.NS, "link", "set", "eth0", "up")
		mustRun(t, ctx, "ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	b := &Bench{Log: io.Discard}
	fl, err := b.buildFloor(ctx, hosts[0], hosts[1], hostgw)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("10.77.2.2"); fl.pod != want {
		t.Errorf("pod address %s, want %s", fl.pod, want)
	}
	route := mustRun(t, ctx, "ip", "-n", hosts[0].NS, "route", "get", fl.pod.String())
	podLink := mustRun(t, ctx, "ip", "-n", fl.podNS, "link", "show", "eth0")
	if hostgw {
		// Routed over the underlay to the peer's address, pods at its MTU.
		if want := "via 198.51.100.2 dev eth0"; !strings.Contains(route, want) {
			t.Errorf("route to %s lacks %q: %s", fl.pod, want, route)
		}
		if !strings.Contains(podLink, "mtu 1500") {
			t.Errorf("pod link not at the underlay's MTU:\n%s", podLink)
		}
	} else {
		if want := netip.MustParseAddr("10.77.2.0"); fl.dev != want {
			t.Errorf("device address %s, want %s", fl.dev, want)
		}
		link := mustRun(t, ctx, "ip", "-d", "-n", hosts[0].NS, "link", "show", floorDev)
		for _, want := range []string{"mtu 1450", "vxlan id 4242", "local 198.51.100.1 dev eth0", "dstport 4789", "nolearning"} {
			if !strings.Contains(link, want) {
				t.Errorf("%s lacks %q:\n%s", floorDev, want, link)
			}
		}
		// The host leg, to the peer's device address.
		mustRun(t, ctx, "ip", "netns", "exec", hosts[0].NS, "ping", "-c1", "-W2", fl.dev.String())
		// The pod-to-pod leg goes over the VXLAN device, not around it.
		if !strings.Contains(route, "dev "+floorDev) {
			t.Errorf("route to %s does not use %s: %s", fl.pod, floorDev, route)
		}
		if !strings.Contains(podLink, "mtu 1450") {
			t.Errorf("pod link not at the device's MTU:\n%s", podLink)
		}
	}
	mustRun(t, ctx, "ip", "netns", "exec", fl.podNS, "ping", "-c1", "-W2", fl.pod.String())

	b.dropFloor(hosts[0], hosts[1])
	for _, h := range hosts {
		if err := exec.Command("ip", "netns", "exec", floorPodNS(h), "true").Run(); err == nil {
			t.Errorf("%s is left after dropFloor", floorPodNS(h))
		}
		if out, _ := exec.Command("ip", "-n", h.NS, "-br", "link").CombinedOutput(); strings.Contains(string(out), "floor") {
			t.Errorf("links left in %s after dropFloor:\n%s", h.NS, out)
		}
		if out, _ := exec.Command("ip", "-n", h.NS, "route").CombinedOutput(); strings.Contains(string(out), "10.77.") {
			t.Errorf("routes left in %s after dropFloor:\n%s", h.NS, out)
		}
	}
}

func mustRun(t *testing.T, ctx context.Context, argv ...string) string {
	t.Helper()
	out, err := run(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAgainstFloor(t *testing.T) {
	for _, tc := range []struct {
		name        string
		weft, floor []float64
		wantNote    string
	}{
		{"three rounds", []float64{9, 8, 10}, []float64{10, 10, 10}, "range 8.00–10.0; ratio by round 0.90, 0.80, 1.00"},
		{"one round", []float64{5}, []float64{4}, "ratio by round 1.25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := report.Measurement{What: "weft", Unit: "Gbit/s", Samples: tc.weft}
			f := report.Measurement{What: "floor", Unit: "Gbit/s", Samples: tc.floor}
			m := againstFloor("against", w, f)
			if m.What != "against" || m.Baseline == nil || m.Baseline.What != "floor" {
				t.Errorf("row %q with baseline %+v, want %q against the floor's", m.What, m.Baseline, "against")
			}
			if v, _ := m.Value(); v != report.Quantile(tc.weft, 0.5) {
				t.Errorf("figure %v, want Weft's median %v", v, report.Quantile(tc.weft, 0.5))
			}
			if m.Note != tc.wantNote {
				t.Errorf("note %q, want %q", m.Note, tc.wantNote)
			}
		})
	}
}

// TestFloorPodNSIsSwept checks that `weft lab down` recognises the
// hand-made pod namespaces as the lab's, so a crashed bench leaves none.
func TestFloorPodNSIsSwept(t *testing.T) {
	n, err := lab.NewNames("wbench")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if ns := floorPodNS(lab.Host{NS: n.HostNS(i)}); !n.IsNS(ns) {
			t.Errorf("weft lab down would not remove %s", ns)
		}
	}
}
