package kube

import (
	"encoding/json"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
)

func TestNewAnnotations(t *testing.T) {
	for _, tc := range []struct{ in, backendType, err string }{
		{"flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type", ""},
		{"flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/backend-type", ""},
		{"org.com/9", "org.com/9-backend-type", ""},
		{"org.com/net-", "org.com/net-backend-type", ""},
		{"a/b/c", "", "at most one"},
		{"Flannel.io", "", "DNS-style"},
		{"nodots", "", "DNS-style"},
	} {
		a, err := NewAnnotations(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || a.BackendType != tc.backendType {
			t.Errorf("%q: %q, %v; want %q", tc.in, a.BackendType, err, tc.backendType)
		}
	}
}

func TestDesired(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	v6 := netip.MustParseAddr("fd00::1")
	p := "flannel.alpha.coreos.com/"
	for _, tc := range []struct {
		name    string
		attrs   subnet.LeaseAttrs
		current map[string]string
		want    map[string]string
	}{
		{"vxlan", subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"5a:1f:00:00:00:01"}`)}, nil,
			map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan", p + "backend-data": `{"VNI":1,"VtepMAC":"5a:1f:00:00:00:01"}`, p + "public-ip": "10.0.0.1"}},
		{"host-gw writes null data", subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "host-gw"}, nil,
			map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "10.0.0.1"}},
		{"overwrite", subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "host-gw"}, map[string]string{p + "public-ip-overwrite": "203.0.113.9"},
			map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "203.0.113.9"}},
		{"vxlan v6 only", subnet.LeaseAttrs{PublicIPv6: &v6, BackendType: "vxlan", BackendV6Data: json.RawMessage(`{"VNI":1}`)}, nil,
			map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan", p + "backend-v6-data": `{"VNI":1}`, p + "public-ipv6": "fd00::1"}},
	} {
		if got := a.Desired(tc.attrs, tc.current); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNodeLease(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	cfg, _, _, err := subnet.ParseKubeConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err = cfg.WithSubnetLen(netip.MustParsePrefix("10.244.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	p := "flannel.alpha.coreos.com/"
	good := map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "10.0.0.2"}
	with := func(k, v string) map[string]string {
		m := maps.Clone(good)
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		n    nodeInfo
		err  string
	}{
		{"good", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: good}, ""},
		{"not flannel", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: with(p+"kube-subnet-manager", "")}, "not a flannel node"},
		{"no podCIDR", nodeInfo{name: "n", annotations: good}, "no IPv4 podCIDR"},
		{"three podCIDRs", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24", "fd00::/64", "fd01::/64"}, annotations: good}, "want one IPv4"},
		{"outside", nodeInfo{name: "n", podCIDRs: []string{"10.99.2.0/24"}, annotations: good}, "10.99.2.0/24"},
		{"other length", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/25"}, annotations: good}, "not a /24"},
		{"no public-ip", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: with(p+"public-ip", "")}, "public-ip is missing"},
		{"v6 public-ip", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: with(p+"public-ip", "fd00::1")}, "not an IPv4"},
		{"backend type", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: with(p+"backend-type", "vxlan")}, "BackendType"},
		{"bad json", nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24"}, annotations: with(p+"backend-data", "{")}, "not valid JSON"},
	} {
		l, _, err := a.nodeLease(cfg, &tc.n, nil)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == "" && (l.Subnet.String() != "10.244.2.0/24" || l.Attrs.PublicIP.String() != "10.0.0.2"):
			t.Errorf("%s: lease %+v", tc.name, l)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
		case tc.err != "" && tc.err != "not a flannel node" && !strings.Contains(err.Error(), `node "n"`):
			t.Errorf("%s: err %v does not name the node", tc.name, err)
		}
	}
}

// TestNodeLeaseDualStack checks the families of a peer's lease in
// dual-stack and IPv6-only networks: both parts when usable, the IPv4 part
// alone (with the reason) when the IPv6 part is missing or bad in
// dual-stack, and an error in IPv6-only.
func TestNodeLeaseDualStack(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	parse := func(js string) *subnet.Config {
		cfg, _, _, err := subnet.ParseKubeConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.EnableIPv4 {
			if cfg, err = cfg.WithSubnetLen(netip.MustParsePrefix("10.244.0.0/24")); err != nil {
				t.Fatal(err)
			}
		}
		if cfg, err = cfg.WithIPv6SubnetLen(netip.MustParsePrefix("fd00:10:244::/64")); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	dual := parse(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	v6only := parse(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	p := "flannel.alpha.coreos.com/"
	good := map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "10.0.0.2",
		p + "backend-v6-data": "null", p + "public-ipv6": "2001:db8::2"}
	with := func(k, v string) map[string]string {
		m := maps.Clone(good)
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	both := []string{"fd00:10:244:2::/64", "10.244.2.0/24"}
	for _, tc := range []struct {
		name     string
		cfg      *subnet.Config
		n        nodeInfo
		v4, v6   string // the lease's subnets ("" none)
		why, err string
	}{
		{"dual", dual, nodeInfo{name: "n", podCIDRs: both, annotations: good}, "10.244.2.0/24", "fd00:10:244:2::/64", "", ""},
		{"dual, no v6 podCIDR", dual, nodeInfo{name: "n", podCIDRs: both[1:], annotations: good}, "10.244.2.0/24", "", "no IPv6 podCIDR", ""},
		{"dual, no public-ipv6", dual, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"public-ipv6", "")}, "10.244.2.0/24", "", "public-ipv6 is missing", ""},
		{"dual, v4 public-ipv6", dual, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"public-ipv6", "10.0.0.2")}, "10.244.2.0/24", "", "not an IPv6 address", ""},
		{"dual, bad v6 json", dual, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"backend-v6-data", "{")}, "10.244.2.0/24", "", "not valid JSON", ""},
		{"dual, v6 outside", dual, nodeInfo{name: "n", podCIDRs: []string{"10.244.2.0/24", "fd00:99::/64"}, annotations: good}, "10.244.2.0/24", "", "fd00:99::/64", ""},
		{"dual, no v4 part", dual, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"public-ip", "")}, "", "", "", "public-ip is missing"},
		{"v6only", v6only, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"public-ip", "")}, "", "fd00:10:244:2::/64", "", ""},
		{"v6only, no v6", v6only, nodeInfo{name: "n", podCIDRs: both, annotations: with(p+"public-ipv6", "")}, "", "", "", "public-ipv6 is missing"},
	} {
		l, why, err := a.nodeLease(tc.cfg, &tc.n, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `node "n"`) {
				t.Errorf("%s: err %v, want %q naming the node", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		sub := func(p netip.Prefix) string {
			if !p.IsValid() {
				return ""
			}
			return p.String()
		}
		if sub(l.Subnet) != tc.v4 || sub(l.IPv6Subnet) != tc.v6 || (tc.v6 == "") == l.Attrs.IPv6().IsValid() {
			t.Errorf("%s: lease %s + %s (public v6 %v), want %q + %q", tc.name, sub(l.Subnet), sub(l.IPv6Subnet), l.Attrs.IPv6(), tc.v4, tc.v6)
		}
		if (tc.why == "") != (why == nil) || (why != nil && !strings.Contains(why.Error(), tc.why)) {
			t.Errorf("%s: IPv6 reason %v, want %q", tc.name, why, tc.why)
		}
	}
}
