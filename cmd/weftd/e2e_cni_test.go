package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/test/cnitest"
)

var (
	pluginsOnce sync.Once
	pluginsDir  string
	pluginsErr  error
)

// buildPlugins builds the flannel plugin and its delegates once.
func buildPlugins(t testing.TB) string {
	t.Helper()
	pluginsOnce.Do(func() {
		pluginsDir, pluginsErr = os.MkdirTemp("", "weft-e2e-cni-")
		if pluginsErr == nil {
			pluginsErr = cnitest.BuildPlugins(pluginsDir)
		}
	})
	if pluginsErr != nil {
		t.Fatal(pluginsErr)
	}
	return pluginsDir
}

// TestE2ECNIPods runs two hosts with weftd and attaches pods to each through
// the real flannel CNI plugin (stock conflist, libcni, the reference bridge
// and host-local): each pod gets an address in its host's FLANNEL_SUBNET, a
// default route via the bridge and FLANNEL_MTU, and pods on different hosts
// reach each other over the overlay.
func TestE2ECNIPods(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 30*time.Second)
	bin := buildPlugins(t)
	type podOn struct {
		h   *host
		pod *cnitest.Pod
	}
	var pods []podOn
	for _, h := range c.hosts {
		h.start()
	}
	for _, h := range c.hosts {
		env := h.waitReady()
		ch := cnitest.Attach(t, h.ns, bin, h.envPath)
		list := ch.StockConfList(t, "1.0.0")
		for range 2 {
			p := ch.AddPod(t, list)
			if !env.Subnet.Masked().Contains(p.Addr.Addr()) {
				t.Errorf("%s: pod address %s is not in FLANNEL_SUBNET %s", h.name, p.Addr, env.Subnet)
			}
			out, _ := p.Exec("ip", "route", "show", "default")
			if want := "via " + env.Subnet.Addr().String(); !strings.Contains(out, want) {
				t.Errorf("%s: pod default route %q, want %q", h.name, strings.TrimSpace(out), want)
			}
			mtu, _ := p.Exec("cat", "/sys/class/net/eth0/mtu")
			if strings.TrimSpace(mtu) != fmt.Sprint(env.MTU) {
				t.Errorf("%s: pod MTU %s, want FLANNEL_MTU %d", h.name, strings.TrimSpace(mtu), env.MTU)
			}
			if err := ch.Check(list, p); err != nil {
				t.Errorf("%s: CHECK: %v", h.name, err)
			}
			pods = append(pods, podOn{h, p})
		}
	}
	for _, a := range pods {
		for _, b := range pods {
			if a.pod == b.pod {
				continue
			}
			eventually(t, 10*time.Second, fmt.Sprintf("pod %s on %s reaches pod %s on %s", a.pod.Addr.Addr(), a.h.name, b.pod.Addr.Addr(), b.h.name), func() error {
				_, err := a.pod.Exec("ping", "-n", "-c1", "-W1", b.pod.Addr.Addr().String())
				return err
			})
		}
	}
}
