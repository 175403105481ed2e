package subnet

import (
	"math"
	"net/netip"
	"testing"
)

func TestSubnetCountAndAt(t *testing.T) {
	tests := []struct {
		network string
		len     int
		count   uint64
		at      map[uint64]string
	}{
		{"10.244.0.0/16", 24, 256, map[uint64]string{0: "10.244.0.0/24", 1: "10.244.1.0/24", 255: "10.244.255.0/24"}},
		{"10.0.0.0/28", 30, 4, map[uint64]string{0: "10.0.0.0/30", 3: "10.0.0.12/30"}},
		{"10.0.0.0/8", 30, 1 << 22, map[uint64]string{1<<22 - 1: "10.255.255.252/30"}},
		{"fd00::/56", 64, 256, map[uint64]string{1: "fd00:0:0:1::/64", 255: "fd00:0:0:ff::/64"}},
		{"fd00::/48", 112, math.MaxUint64, map[uint64]string{1: "fd00::1:0/112"}},
		{"::/0", 128, math.MaxUint64, nil},
		{"10.0.0.0/24", 16, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			n := netip.MustParsePrefix(tt.network)
			if got := SubnetCount(n, tt.len); got != tt.count {
				t.Errorf("SubnetCount(%s, %d) = %d, want %d", n, tt.len, got, tt.count)
			}
			for i, want := range tt.at {
				if got := SubnetAt(n, tt.len, i); got.String() != want {
					t.Errorf("SubnetAt(%s, %d, %d) = %s, want %s", n, tt.len, i, got, want)
				}
			}
		})
	}
}

func TestSubnetRange(t *testing.T) {
	r := SubnetRange{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Len:     24,
		Min:     netip.MustParseAddr("10.244.1.0"),
		Max:     netip.MustParseAddr("10.244.255.0"),
	}
	if r.Count() != 255 {
		t.Errorf("Count = %d, want 255", r.Count())
	}
	if r.At(0).String() != "10.244.1.0/24" || r.At(254).String() != "10.244.255.0/24" {
		t.Errorf("At(0) = %s, At(254) = %s", r.At(0), r.At(254))
	}
	contains := map[string]bool{
		"10.244.1.0/24":   true,
		"10.244.255.0/24": true,
		"10.244.77.0/24":  true,
		"10.244.0.0/24":   false, // below Min
		"10.244.1.0/25":   false, // wrong length
		"10.244.1.0/23":   false,
		"10.245.0.0/24":   false, // outside the network
		"fd00::/24":       false,
	}
	for p, want := range contains {
		if got := r.Contains(netip.MustParsePrefix(p)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", p, got, want)
		}
	}
	if r.Contains(netip.PrefixFrom(netip.MustParseAddr("10.244.1.5"), 24)) {
		t.Errorf("Contains accepted a prefix with host bits")
	}
	if r.Contains(netip.Prefix{}) {
		t.Errorf("Contains accepted the zero prefix")
	}
	var n uint64
	prev := netip.Prefix{}
	for p := range r.All {
		if !r.Contains(p) || (prev.IsValid() && !prev.Addr().Less(p.Addr())) {
			t.Fatalf("All yielded %s after %s", p, prev)
		}
		prev = p
		n++
	}
	if n != r.Count() {
		t.Errorf("All yielded %d subnets, want %d", n, r.Count())
	}
	stop := 0
	r.All(func(netip.Prefix) bool { stop++; return stop < 3 })
	if stop != 3 {
		t.Errorf("All did not stop when yield returned false")
	}

	one := SubnetRange{Network: r.Network, Len: 24, Min: r.Min, Max: r.Min}
	if one.Count() != 1 || one.At(0).String() != "10.244.1.0/24" {
		t.Errorf("single-subnet range: Count %d At(0) %s", one.Count(), one.At(0))
	}
	empty := SubnetRange{Network: r.Network, Len: 24, Min: r.Max, Max: r.Min}
	if empty.Count() != 0 {
		t.Errorf("inverted range Count = %d, want 0", empty.Count())
	}
	v6 := SubnetRange{Network: netip.MustParsePrefix("fd00::/56"), Len: 64, Min: netip.MustParseAddr("fd00:0:0:1::"), Max: netip.MustParseAddr("fd00:0:0:ff::")}
	if v6.Count() != 255 || v6.At(254).String() != "fd00:0:0:ff::/64" || !v6.Contains(netip.MustParsePrefix("fd00:0:0:80::/64")) {
		t.Errorf("IPv6 range: Count %d At(254) %s", v6.Count(), v6.At(254))
	}
}

func TestConfigSubnetsMatchesDefaults(t *testing.T) {
	cfg, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Subnets()
	if r.Count() != 255 || r.At(0) != netip.PrefixFrom(cfg.SubnetMin, 24) {
		t.Errorf("Subnets() = %+v (count %d)", r, r.Count())
	}
	if !cfg.Contains(netip.MustParsePrefix("10.244.0.0/24")) || cfg.Contains(netip.MustParsePrefix("10.244.0.0/25")) {
		t.Errorf("Config.Contains wrong")
	}
}
