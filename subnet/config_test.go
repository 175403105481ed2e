package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		subnetLen int
		min, max  string
		backend   string
	}{
		{"flannel default /16", `{"Network":"10.244.0.0/16"}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
		{"/8", `{"Network":"10.0.0.0/8"}`, 24, "10.0.1.0", "10.255.255.0", "vxlan"},
		{"/22 still 24", `{"Network":"10.0.0.0/22"}`, 24, "10.0.1.0", "10.0.3.0", "vxlan"},
		{"/23 is prefix+2", `{"Network":"10.0.0.0/23"}`, 25, "10.0.0.128", "10.0.1.128", "vxlan"},
		{"/28 smallest", `{"Network":"10.0.0.0/28"}`, 30, "10.0.0.4", "10.0.0.12", "vxlan"},
		{"explicit SubnetLen", `{"Network":"10.244.0.0/16","SubnetLen":26}`, 26, "10.244.0.64", "10.244.255.192", "vxlan"},
		{"explicit range", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}`, 24, "10.244.10.0", "10.244.20.0", "vxlan"},
		{"min may be the first subnet", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.0"}`, 24, "10.244.0.0", "10.244.255.0", "vxlan"},
		{"host-gw backend", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, 24, "10.244.1.0", "10.244.255.0", "host-gw"},
		{"backend type lowercased", `{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","VNI":4}}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
		{"backend without type", `{"Network":"10.244.0.0/16","Backend":{"VNI":4}}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
		{"backend null", `{"Network":"10.244.0.0/16","Backend":null}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
		{"flags explicitly off", `{"Network":"10.244.0.0/16","EnableIPv4":true,"EnableIPv6":false,"EnableNFTables":false}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
		{"IPv6 fields checked while disabled", `{"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56"}`, 24, "10.244.1.0", "10.244.255.0", "vxlan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, unknown, err := ParseConfig([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseConfig(%s): %v", tt.in, err)
			}
			if len(unknown) != 0 {
				t.Errorf("unknown fields %v, want none", unknown)
			}
			if !cfg.EnableIPv4 || cfg.EnableIPv6 || cfg.EnableNFTables {
				t.Errorf("flags IPv4=%v IPv6=%v NFTables=%v, want true false false", cfg.EnableIPv4, cfg.EnableIPv6, cfg.EnableNFTables)
			}
			if cfg.SubnetLen != tt.subnetLen || cfg.SubnetMin.String() != tt.min || cfg.SubnetMax.String() != tt.max {
				t.Errorf("SubnetLen %d [%s, %s], want %d [%s, %s]", cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, tt.subnetLen, tt.min, tt.max)
			}
			if cfg.BackendType != tt.backend {
				t.Errorf("BackendType %q, want %q", cfg.BackendType, tt.backend)
			}
			if !json.Valid(cfg.Backend) {
				t.Errorf("Backend %q is not valid JSON", cfg.Backend)
			}
		})
	}
}

// TestParseConfigIPv6Defaults holds the IPv6 defaults to flanneld's
// (v0.28.9 pkg/subnet/config.go CheckNetworkConfig): /64 subnets when the
// network is a /62 or larger, prefix+2 from /63 to /124; Min the second
// subnet, Max the last.
func TestParseConfigIPv6Defaults(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		len      int
		min, max string
	}{
		{"/56 gives /64", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`, 64, "fd00:10:244:1::", "fd00:10:244:ff::"},
		{"/48 gives /64", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:1::/48"}`, 64, "2001:db8:1:1::", "2001:db8:1:ffff::"},
		{"/62 gives /64", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/62"}`, 64, "fd00:0:0:1::", "fd00:0:0:3::"},
		// flannel gives /65 here; the first wave of Weft gave /64.
		{"/63 gives /65", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/63"}`, 65, "fd00::8000:0:0:0", "fd00:0:0:1:8000::"},
		{"/120 gives /122", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/120"}`, 122, "fd00::40", "fd00::c0"},
		{"/124 gives /126", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/124"}`, 126, "fd00::4", "fd00::c"},
		{"explicit prefix+2", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/56","IPv6SubnetLen":58}`, 58, "fd00:0:0:40::", "fd00:0:0:c0::"},
		{"explicit 126", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/64","IPv6SubnetLen":126}`, 126, "fd00::4", "fd00::ffff:ffff:ffff:fffc"},
		{"explicit range", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:10::","IPv6SubnetMax":"fd00:0:0:20::"}`, 64, "fd00:0:0:10::", "fd00:0:0:20::"},
		{"IPv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56"}`, 64, "fd00:0:0:1::", "fd00:0:0:ff::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := ParseConfig([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseConfig(%s): %v", tt.in, err)
			}
			if !cfg.EnableIPv6 {
				t.Fatalf("EnableIPv6 false")
			}
			if cfg.IPv6SubnetLen != tt.len || cfg.IPv6SubnetMin.String() != tt.min || cfg.IPv6SubnetMax.String() != tt.max {
				t.Errorf("IPv6 SubnetLen %d [%s, %s], want %d [%s, %s]", cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, tt.len, tt.min, tt.max)
			}
			if !cfg.ContainsIPv6(netip.PrefixFrom(cfg.IPv6SubnetMax, cfg.IPv6SubnetLen)) {
				t.Errorf("ContainsIPv6(%s/%d) false", cfg.IPv6SubnetMax, cfg.IPv6SubnetLen)
			}
			if cfg.IPv6Subnets().Count() == 0 {
				t.Errorf("no IPv6 subnets to lease")
			}
		})
	}
}

// TestParseConfigFamilyOffIsAbsent: a family that is off leaves every one
// of its fields zero, even when they are given, and leases none of it.
func TestParseConfigFamilyOffIsAbsent(t *testing.T) {
	cfg, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","IPv6Network":"fd00::/56","IPv6SubnetLen":64}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IPv6Network.IsValid() || cfg.IPv6SubnetLen != 0 || cfg.IPv6SubnetMin.IsValid() || cfg.IPv6SubnetMax.IsValid() {
		t.Errorf("IPv6 off, but its fields are set: %s /%d [%s, %s]", cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax)
	}
	if cfg.ContainsIPv6(netip.MustParsePrefix("fd00:0:0:1::/64")) {
		t.Errorf("ContainsIPv6 true with IPv6 off")
	}
	cfg, _, err = ParseConfig([]byte(`{"EnableIPv4":false,"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.IsValid() || cfg.SubnetLen != 0 || cfg.SubnetMin.IsValid() || cfg.SubnetMax.IsValid() {
		t.Errorf("IPv4 off, but its fields are set: %s /%d [%s, %s]", cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax)
	}
	if cfg.Contains(netip.MustParsePrefix("10.244.1.0/24")) {
		t.Errorf("Contains true with IPv4 off")
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error, quoting the bad value
	}{
		{"network too small", `{"Network":"10.0.0.0/29"}`, []string{`"10.0.0.0/29"`, "too small", "/28"}},
		{"network /32", `{"Network":"10.0.0.1/32"}`, []string{`"10.0.0.1/32"`, "too small"}},
		{"network missing", `{}`, []string{"Network is missing"}},
		{"network not a CIDR", `{"Network":"10.244.0.0"}`, []string{`"10.244.0.0"`, "IPv4 CIDR"}},
		{"network garbage", `{"Network":"ten"}`, []string{`"ten"`}},
		{"network IPv6", `{"Network":"fd00::/48"}`, []string{`"fd00::/48"`, "IPv4"}},
		{"network host bits", `{"Network":"10.244.1.0/16"}`, []string{`"10.244.1.0/16"`, "host bits", `"10.244.0.0/16"`}},
		{"SubnetLen equal to network", `{"Network":"10.244.0.0/16","SubnetLen":16}`, []string{"SubnetLen 16", "at least 18"}},
		{"SubnetLen prefix+1 (flannel v0.28.9 CheckNetworkConfig refuses it too)", `{"Network":"10.244.0.0/16","SubnetLen":17}`, []string{"SubnetLen 17", "at least 18"}},
		{"SubnetLen shorter than network", `{"Network":"10.244.0.0/16","SubnetLen":8}`, []string{"SubnetLen 8", "out of range"}},
		{"SubnetLen too long", `{"Network":"10.244.0.0/16","SubnetLen":31}`, []string{"SubnetLen 31", "at most 30"}},
		{"SubnetLen negative", `{"Network":"10.244.0.0/16","SubnetLen":-1}`, []string{"SubnetLen -1"}},
		{"SubnetMin off boundary", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}`, []string{`"10.244.1.5"`, "boundary", "10.244.1.0"}},
		{"SubnetMax off boundary", `{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.1"}`, []string{`"10.244.9.1"`, "boundary"}},
		{"SubnetMin outside network", `{"Network":"10.244.0.0/16","SubnetMin":"10.245.1.0"}`, []string{`"10.245.1.0"`, "outside Network 10.244.0.0/16"}},
		{"SubnetMax outside network", `{"Network":"10.244.0.0/16","SubnetMax":"11.0.0.0"}`, []string{`"11.0.0.0"`, "outside"}},
		{"SubnetMin not an address", `{"Network":"10.244.0.0/16","SubnetMin":"first"}`, []string{`"first"`, "IPv4 address"}},
		{"SubnetMin IPv6", `{"Network":"10.244.0.0/16","SubnetMin":"fd00::"}`, []string{`"fd00::"`, "IPv4 address"}},
		{"min above max", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.8.0"}`, []string{"10.244.9.0", "above", "10.244.8.0"}},
		{"SubnetLen wrong type", `{"Network":"10.244.0.0/16","SubnetLen":"24"}`, []string{"SubnetLen", `"24"`, "string", "number"}},
		{"SubnetLen fractional", `{"Network":"10.244.0.0/16","SubnetLen":24.5}`, []string{"SubnetLen", "24.5", "number"}},
		{"Network wrong type", `{"Network":10}`, []string{"Network", "10", "number", "want a string"}},
		{"EnableIPv4 wrong type", `{"Network":"10.244.0.0/16","EnableIPv4":"yes"}`, []string{"EnableIPv4", `"yes"`, "boolean"}},
		{"SubnetMin wrong type", `{"Network":"10.244.0.0/16","SubnetMin":[1]}`, []string{"SubnetMin", "[1]", "array"}},
		{"Backend not an object", `{"Network":"10.244.0.0/16","Backend":"vxlan"}`, []string{"Backend", `vxlan`, "object"}},
		{"Backend type wrong type", `{"Network":"10.244.0.0/16","Backend":{"Type":1}}`, []string{"Type", "1", "number", "string"}},
		{"Backend type empty", `{"Network":"10.244.0.0/16","Backend":{"Type":""}}`, []string{"Backend.Type is empty"}},
		{"EnableIPv6 without network", `{"Network":"10.244.0.0/16","EnableIPv6":true}`, []string{"IPv6Network is missing"}},
		{"EnableNFTables wrong type", `{"Network":"10.244.0.0/16","EnableNFTables":"true"}`, []string{"EnableNFTables", `"true"`, "boolean"}},
		{"both families off", `{"Network":"10.244.0.0/16","EnableIPv4":false}`, []string{"EnableIPv4 and EnableIPv6 are both false"}},
		{"IPv6Network invalid", `{"Network":"10.244.0.0/16","IPv6Network":"10.0.0.0/8"}`, []string{`"10.0.0.0/8"`, "IPv6 CIDR"}},
		{"IPv6SubnetLen out of range", `{"Network":"10.244.0.0/16","IPv6Network":"fd00::/56","IPv6SubnetLen":48}`, []string{"IPv6SubnetLen 48"}},
		{"IPv6Network is IPv4", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.245.0.0/16"}`, []string{`"10.245.0.0/16"`, "not an IPv6 CIDR"}},
		{"IPv6Network is IPv4-mapped", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"::ffff:10.0.0.0/104"}`, []string{`"::ffff:10.0.0.0/104"`, "not an IPv6 CIDR"}},
		{"IPv6Network garbage", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::"}`, []string{`"fd00::"`, "IPv6 CIDR"}},
		{"IPv6Network host bits", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::1/56"}`, []string{`"fd00::1/56"`, "host bits", `"fd00::/56"`}},
		{"IPv6Network too small", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}`, []string{`"fd00::/125"`, "too small", "/124"}},
		// flannel refuses prefix+1; the first wave of Weft accepted it.
		{"IPv6SubnetLen prefix+1", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57}`, []string{"IPv6SubnetLen 57", "at least 58"}},
		{"IPv6SubnetLen equal to network", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":56}`, []string{"IPv6SubnetLen 56"}},
		{"IPv6SubnetLen 127", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/64","IPv6SubnetLen":127}`, []string{"IPv6SubnetLen 127", "at most 126"}},
		{"IPv6SubnetMin off boundary", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:1::1"}`, []string{`"fd00:0:0:1::1"`, "boundary", "fd00:0:0:1::"}},
		{"IPv6SubnetMax outside", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMax":"fd00:0:1::"}`, []string{`"fd00:0:1::"`, "outside"}},
		{"IPv6SubnetMin IPv4", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"10.0.0.0"}`, []string{`"10.0.0.0"`, "IPv6 address"}},
		{"IPv6 min above max", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:8::"}`, []string{"fd00:0:0:9::", "above"}},
		{"IPv6 only without network", `{"EnableIPv4":false,"EnableIPv6":true}`, []string{"IPv6Network is missing"}},
		{"IPv4 off, bad Network still reported", `{"EnableIPv4":false,"Network":"10.244.0.0","EnableIPv6":true,"IPv6Network":"fd00::/56"}`, []string{`"10.244.0.0"`}},
		{"not JSON", `Network=10.244.0.0/16`, []string{"not valid JSON", "Network=10.244.0.0/16"}},
		{"not an object", `[]`, []string{"array"}},
		{"trailing data", `{"Network":"10.244.0.0/16"} {}`, []string{"trailing data"}},
		{"empty", ``, []string{"invalid network config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := ParseConfig([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseConfig(%s) = %+v, want an error", tt.in, cfg)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigUnknownFields(t *testing.T) {
	cfg, unknown, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Zebra":1,"Apple":{"x":2},"SubnetLen":24}`))
	if err != nil {
		t.Fatalf("unknown fields must not be fatal: %v", err)
	}
	if want := []string{"Apple", "Zebra"}; !slices.Equal(unknown, want) {
		t.Errorf("unknown = %v, want %v", unknown, want)
	}
	if cfg.Network.String() != "10.244.0.0/16" {
		t.Errorf("Network %s", cfg.Network)
	}
}

func TestConfigEqual(t *testing.T) {
	a, _, _ := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`))
	b, _, _ := ParseConfig([]byte(`{"Backend":{"VNI":1, "Type":"vxlan"},"SubnetLen":24,"Network":"10.244.0.0/16"}`))
	c, _, _ := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`))
	if !a.Equal(b) {
		t.Errorf("equivalent configs differ")
	}
	if a.Equal(c) {
		t.Errorf("configs with different VNI are equal")
	}
	if a.Equal(nil) || !(*Config)(nil).Equal(nil) {
		t.Errorf("nil handling wrong")
	}
}

// configJSON renders a parsed config back to flannel's JSON.
func configJSON(c *Config) []byte {
	m := map[string]any{
		"Network":   c.Network.String(),
		"SubnetLen": c.SubnetLen,
		"SubnetMin": c.SubnetMin.String(),
		"SubnetMax": c.SubnetMax.String(),
		"Backend":   c.Backend,
	}
	if c.IPv6Network.IsValid() {
		m["IPv6Network"] = c.IPv6Network.String()
		m["IPv6SubnetLen"] = c.IPv6SubnetLen
		m["IPv6SubnetMin"] = c.IPv6SubnetMin.String()
		m["IPv6SubnetMax"] = c.IPv6SubnetMax.String()
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %+v: %v", m, err))
	}
	return b
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.0.0.0/28","SubnetLen":30}`,
		`{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","IPv6Network":"fd00::/56","IPv6SubnetLen":64}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true}`,
		`{"Network":"10.0.0.0/29"}`,
		`{"Network":"10.244.0.0/16","SubnetLen":"24"}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":1}}`,
		`{"Network":"10.244.0.0/16","Foo":1}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		r := cfg.Subnets()
		if !r.Contains(netip.PrefixFrom(cfg.SubnetMin, cfg.SubnetLen)) || !r.Contains(netip.PrefixFrom(cfg.SubnetMax, cfg.SubnetLen)) {
			t.Fatalf("range [%s, %s] /%d not within its own network %s", cfg.SubnetMin, cfg.SubnetMax, cfg.SubnetLen, cfg.Network)
		}
		if cfg.SubnetLen <= cfg.Network.Bits() || cfg.SubnetLen > 30 || cfg.Network.Bits() > 28 {
			t.Fatalf("SubnetLen %d with network %s accepted", cfg.SubnetLen, cfg.Network)
		}
		again, _, err := ParseConfig(configJSON(cfg))
		if err != nil {
			t.Fatalf("re-parsing %s (from %q): %v", configJSON(cfg), data, err)
		}
		if !again.Equal(cfg) {
			t.Fatalf("re-parsed config differs:\n%+v\n%+v", cfg, again)
		}
	})
}

func TestParseConfigEnableNFTables(t *testing.T) {
	for _, tt := range []struct {
		json string
		want bool
	}{
		{`{"Network":"10.244.0.0/16"}`, false},
		{`{"Network":"10.244.0.0/16","EnableNFTables":false}`, false},
		{`{"Network":"10.244.0.0/16","EnableNFTables":true}`, true},
		{`{"Network":"10.244.0.0/16","EnableNFTables":null}`, false},
	} {
		cfg, unknown, err := ParseConfig([]byte(tt.json))
		if err != nil {
			t.Fatalf("%s: %v", tt.json, err)
		}
		if len(unknown) != 0 {
			t.Errorf("%s: unknown fields %v", tt.json, unknown)
		}
		if cfg.EnableNFTables != tt.want {
			t.Errorf("%s: EnableNFTables = %v, want %v", tt.json, cfg.EnableNFTables, tt.want)
		}
	}
}
