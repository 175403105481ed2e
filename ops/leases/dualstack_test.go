package leases

import (
	"testing"
)

func TestParseSubnetsAndAddrs(t *testing.T) {
	for in, want := range map[string]string{
		"10.244.5.0/24":                     "10.244.5.0/24",
		"fd00:10:244:5::/64":                "fd00:10:244:5::/64",
		"10.244.5.0/24,fd00:10:244:5::/64":  "10.244.5.0/24,fd00:10:244:5::/64",
		"fd00:10:244:5::/64,10.244.5.0/24":  "10.244.5.0/24,fd00:10:244:5::/64",
		"10.244.5.0-24&fd00:10:244:5::-64":  "10.244.5.0/24,fd00:10:244:5::/64",
		"0.0.0.0-0&fd00:10:244:5::-64":      "fd00:10:244:5::/64",
		"10.244.5.0-24":                     "10.244.5.0/24",
		"10.244.5.0/24,10.244.6.0/24":       "",
		"10.244.5.1/24":                     "",
		"10.244.5.0/24,fd00::/64,fd01::/64": "",
	} {
		got, err := ParseSubnets(in)
		if (err != nil) != (want == "") || (err == nil && got.String() != want) {
			t.Errorf("ParseSubnets(%q) = %v, %v; want %q", in, got, err, want)
		}
	}
	if a, b, err := ParseAddrs("2001:db8::5,192.0.2.5"); err != nil || a.String() != "192.0.2.5" || b.String() != "2001:db8::5" {
		t.Errorf("ParseAddrs: %v %v %v", a, b, err)
	}
	if _, _, err := ParseAddrs("192.0.2.5,192.0.2.6"); err == nil {
		t.Errorf("two IPv4 addresses accepted")
	}
}
