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
		l, err := a.nodeLease(cfg, &tc.n, nil)
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
