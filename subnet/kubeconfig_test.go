package subnet

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseKubeConfig(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
		ignored       []string
	}{
		{"flannel's manifest", `{"Network": "10.244.0.0/16", "EnableNFTables": false, "Backend": {"Type": "vxlan"}}`, "", nil},
		{"subnet sizes ignored", `{"Network":"10.244.0.0/16","SubnetLen":30,"SubnetMin":"1.2.3.4"}`, "", []string{"SubnetLen", "SubnetMin"}},
		{"tiny network is fine", `{"Network":"10.244.0.0/30"}`, "", nil},
		{"no network", `{"Backend":{"Type":"vxlan"}}`, "Network is missing", nil},
		{"v6 network", `{"Network":"fd00::/48"}`, "not an IPv4 CIDR", nil},
		{"v4 as IPv6Network", `{"Network":"10.244.0.0/16","IPv6Network":"10.0.0.0/8"}`, "IPv6Network \"10.0.0.0/8\" is not an IPv6 CIDR", nil},
		{"host bits", `{"Network":"10.244.1.0/16"}`, "host bits", nil},
		{"bad json", `{"Network":`, "invalid network config", nil},
		{"both off", `{"EnableIPv4":false}`, "both false", nil},
	} {
		cfg, _, ignored, err := ParseKubeConfig([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if cfg.SubnetLen != 0 || !slices.Equal(ignored, tc.ignored) {
			t.Errorf("%s: SubnetLen %d, ignored %v (want %v)", tc.name, cfg.SubnetLen, ignored, tc.ignored)
		}
	}
	cfg, _, _, _ := ParseKubeConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	k, err := cfg.WithSubnetLen(netip.MustParsePrefix("10.244.7.0/24"))
	if err != nil || k.SubnetLen != 24 || !k.Contains(netip.MustParsePrefix("10.244.255.0/24")) || k.SubnetMax.String() != "10.244.255.0" || cfg.SubnetLen != 0 {
		t.Errorf("WithSubnetLen: %+v, %v", k, err)
	}
	for _, bad := range []string{"10.99.0.0/24", "10.244.0.0/16", "10.0.0.0/8"} {
		if _, err := cfg.WithSubnetLen(netip.MustParsePrefix(bad)); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("WithSubnetLen(%s): %v", bad, err)
		}
	}
}
