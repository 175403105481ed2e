package main

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/test/kubetest"
	"github.com/weftnet/weft/test/netnstest"
)

// TestE2EKubeDualStack runs weftd in Kubernetes mode on a dual-stack
// cluster: a real controller manager allocates a podCIDR of each family
// (--cluster-cidr=10.244.0.0/16,fd00:10:244::/56), the hosts have an IPv6
// underlay beside the IPv4 one, and pods attached through the real CNI
// plugin reach each other over both families, with vxlan and host-gw. The
// Nodes carry flanneld's v6 annotations.
func TestE2EKubeDualStack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, be string
		v4       bool
	}{{"vxlan", "vxlan", true}, {"host-gw", "host-gw", true}, {"vxlan-v6only", "vxlan", false}, {"host-gw-v6only", "host-gw", false}} {
		be := tc.be
		t.Run(tc.name, func(t *testing.T) {
			netnstest.SkipUnlessRoot(t)
			c := &cluster{t: t, bin: buildWeftd(t), dir: t.TempDir(), logLevel: "debug", iptablesResync: "1"}
			br := c.newUnderlay()
			c.kube = kubetest.Start(t, kubetest.Options{
				Addr: br.Addr(), IPv6ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"), IPv6NodeCIDRMaskSize: 64,
			})
			c.netConfPath = c.dir + "/net-conf.json"
			conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":%q}}`, be)
			if !tc.v4 {
				// The cluster stays dual-stack; the agents use the v6
				// podCIDRs only, as flanneld.
				conf = fmt.Sprintf(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":%q}}`, be)
			}
			if err := os.WriteFile(c.netConfPath, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			c.addHosts(3)
			for i, h := range c.hosts {
				h.ns.AddAddr(t, "eth0", netip.MustParsePrefix(fmt.Sprintf("2001:db8:77::%d/64", i+1)))
				h.register()
			}
			pods, envs := startCNIPods(t, c, tc.v4, map[string]int{"vxlan": 1430, "host-gw": 1500}[be])
			for i, h := range c.hosts {
				cidrs := c.kube.WaitPodCIDR(t, h.name, 30*time.Second)
				env := envs[h]
				if len(cidrs) != 2 || (tc.v4 && cidrs[0] != env.Subnet.Masked() && cidrs[1] != env.Subnet.Masked()) ||
					(cidrs[0] != env.IPv6Subnet.Masked() && cidrs[1] != env.IPv6Subnet.Masked()) {
					t.Errorf("%s: subnet.env %s and %s, but the Node's podCIDRs are %v", h.name, env.Subnet, env.IPv6Subnet, cidrs)
				}
				n := c.node(h.name)
				want := map[string]string{
					pfx + "kube-subnet-manager": "true",
					pfx + "backend-type":        be,
					pfx + "public-ip":           h.addr.String(),
					pfx + "public-ipv6":         fmt.Sprintf("2001:db8:77::%d", i+1),
				}
				if be == "host-gw" {
					want[pfx+"backend-data"], want[pfx+"backend-v6-data"] = "null", "null"
				}
				if !tc.v4 {
					// flanneld's rules (1.5): IPv6-only vxlan writes no
					// IPv4 pair; host-gw writes null and 0.0.0.0.
					delete(want, pfx+"public-ip")
					if be == "host-gw" {
						want[pfx+"public-ip"] = "0.0.0.0"
					} else if _, ok := n.Annotations[pfx+"public-ip"]; ok {
						t.Errorf("%s: IPv6-only vxlan wrote public-ip %q", h.name, n.Annotations[pfx+"public-ip"])
					}
				}
				for k, v := range want {
					if n.Annotations[k] != v {
						t.Errorf("%s: annotation %s = %q, want %q", h.name, k, n.Annotations[k], v)
					}
				}
				if be == "vxlan" && n.Annotations[pfx+"backend-v6-data"] == "" {
					t.Errorf("%s: no backend-v6-data annotation: %v", h.name, n.Annotations)
				}
			}
			pingMatrix(t, pods)
		})
	}
}
