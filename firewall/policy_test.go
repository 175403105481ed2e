package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestMasqAndForwardRules(t *testing.T) {
	tests := []struct {
		name, network, subnet string
		masq, fwd             []string
	}{{
		name: "ipv4", network: "10.244.0.0/16", subnet: "10.244.52.1/24",
		masq: []string{
			"mark & 0x4000 == 0x4000 return",
			"src 10.244.52.0/24 dst 10.244.0.0/16 return",
			"src 10.244.0.0/16 dst 10.244.52.0/24 return",
			"src != 10.244.0.0/16 dst 10.244.52.0/24 return",
			"src 10.244.0.0/16 dst != 224.0.0.0/4 masquerade",
			"src != 10.244.0.0/16 dst 10.244.0.0/16 masquerade",
		},
		fwd: []string{"src 10.244.0.0/16 accept", "dst 10.244.0.0/16 accept"},
	}, {
		name: "ipv6", network: "fd00:10:244::/56", subnet: "fd00:10:244:34::1/64",
		masq: []string{
			"mark & 0x4000 == 0x4000 return",
			"src fd00:10:244:34::/64 dst fd00:10:244::/56 return",
			"src fd00:10:244::/56 dst fd00:10:244:34::/64 return",
			"src != fd00:10:244::/56 dst fd00:10:244:34::/64 return",
			"src fd00:10:244::/56 dst != ff00::/8 masquerade",
			"src != fd00:10:244::/56 dst fd00:10:244::/56 masquerade",
		},
		fwd: []string{"src fd00:10:244::/56 accept", "dst fd00:10:244::/56 accept"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := Net{Network: netip.MustParsePrefix(tt.network), Subnet: netip.MustParsePrefix(tt.subnet)}
			if got := strs(MasqRules(n)); !slices.Equal(got, tt.masq) {
				t.Errorf("masq:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.masq, "\n"))
			}
			if got := strs(ForwardRules(n)); !slices.Equal(got, tt.fwd) {
				t.Errorf("forward:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.fwd, "\n"))
			}
		})
	}
}

func strs(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func TestPolicyValidate(t *testing.T) {
	p := netip.MustParsePrefix
	v4 := Net{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.1/24")}
	v6 := Net{Network: p("fd00::/56"), Subnet: p("fd00:0:0:3::/64")}
	tests := []struct {
		name string
		pol  Policy
		err  string // "" for valid
	}{
		{"v4", Policy{Masq: true, IPv4: v4}, ""},
		{"dual", Policy{Masq: true, Forward: true, IPv4: v4, IPv6: v6}, ""},
		{"v6 only", Policy{Forward: true, IPv6: v6}, ""},
		{"empty", Policy{}, ""},
		{"subnet outside", Policy{IPv4: Net{Network: p("10.244.0.0/16"), Subnet: p("10.245.3.0/24")}}, "not inside network"},
		{"subnet wider", Policy{IPv4: Net{Network: p("10.244.0.0/16"), Subnet: p("10.0.0.0/8")}}, "not inside network"},
		{"v6 in the v4 slot", Policy{IPv4: v6}, "not an IPv4 prefix"},
		{"v4 in the v6 slot", Policy{IPv6: v4}, "not an IPv6 prefix"},
		{"mixed", Policy{IPv4: Net{Network: p("10.244.0.0/16"), Subnet: p("fd00::/64")}}, "fd00::/64 is not an IPv4 prefix"},
		{"missing subnet", Policy{IPv4: Net{Network: p("10.244.0.0/16")}}, "subnet invalid Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pol.Validate()
			if tt.err == "" && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestPolicyWants(t *testing.T) {
	v4 := Net{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")}
	tests := []struct {
		pol    Policy
		v4, v6 bool
	}{
		{Policy{Masq: true, IPv4: v4}, true, false},
		{Policy{Forward: true, IPv4: v4}, true, false},
		{Policy{IPv4: v4}, false, false},
		{Policy{Masq: true}, false, false},
	}
	for i, tt := range tests {
		if got := tt.pol.Wants(IPv4); got != tt.v4 {
			t.Errorf("%d: Wants(IPv4) = %v, want %v", i, got, tt.v4)
		}
		if got := tt.pol.Wants(IPv6); got != tt.v6 {
			t.Errorf("%d: Wants(IPv6) = %v, want %v", i, got, tt.v6)
		}
	}
}

func TestModes(t *testing.T) {
	if ModeFor(true) != NFTables || ModeFor(false) != IPTables {
		t.Errorf("ModeFor: %s %s", ModeFor(true), ModeFor(false))
	}
	if IPTables.Other() != NFTables || NFTables.Other() != IPTables {
		t.Errorf("Other: %s %s", IPTables.Other(), NFTables.Other())
	}
}

func TestFirstDiff(t *testing.T) {
	byValue := func(a, b string) bool {
		return strings.ReplaceAll(a, "0x00004000", "0x4000") == strings.ReplaceAll(b, "0x00004000", "0x4000")
	}
	for _, tc := range []struct {
		name       string
		have, want []string
		same       func(a, b string) bool
		diff       string
	}{
		{"equal", []string{"a", "b"}, []string{"a", "b"}, nil, ""},
		{"missing", []string{"a"}, []string{"a", "b"}, nil, "missing b"},
		{"extra", []string{"a", "b", "c"}, []string{"a", "b"}, nil, "extra c"},
		{"changed", []string{"a", "x"}, []string{"a", "b"}, nil, "has x, want b"},
		{"same by the caller's rule", []string{"mark 0x00004000"}, []string{"mark 0x4000"}, byValue, ""},
		{"different by the caller's rule", []string{"mark 0x00004000"}, []string{"mark 0x4001"}, byValue, "has mark 0x00004000, want mark 0x4001"},
	} {
		if got := FirstDiff(tc.have, tc.want, tc.same); got != tc.diff {
			t.Errorf("%s: FirstDiff = %q, want %q", tc.name, got, tc.diff)
		}
	}
}
