package registry

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
)

func TestLookup(t *testing.T) {
	if got := Names(); !slices.Equal(got, []string{"host-gw", "vxlan", "wireguard"}) {
		t.Errorf("Names() = %v", got)
	}
	for _, name := range []string{"vxlan", "host-gw", "VXLAN", "wireguard", "WireGuard"} {
		s, err := Lookup(name)
		if err != nil || s.New == nil || s.ValidateData == nil {
			t.Errorf("Lookup(%q) = %+v, %v", name, s, err)
		}
	}
	_, err := Lookup("udp")
	if !errors.Is(err, ErrUnknownBackend) || !strings.Contains(err.Error(), `"udp"`) || !strings.Contains(err.Error(), `"host-gw", "vxlan", "wireguard"`) {
		t.Errorf("Lookup(udp) error = %v", err)
	}
}

func TestValidateData(t *testing.T) {
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	v := ValidateData(cfg)
	for _, tc := range []struct {
		typ, data string
		ok        bool
	}{
		{"vxlan", `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`, true},
		{"vxlan", `{"VNI":2,"VtepMAC":"c6:d2:32:6f:8f:44"}`, false},
		{"vxlan", ``, false},
		{"host-gw", ``, true},
		{"host-gw", `null`, true},
		{"udp", `{}`, false},
		{"wireguard", `{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=","Port":51820}`, true},
		{"wireguard", `{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=","Port":51820,"Engine":"userspace"}`, true},
		{"wireguard", `{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc="}`, true},
		{"wireguard", `{"PublicKey":"not-a-key","Port":51820}`, false},
		{"wireguard", `{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=","Port":70000}`, false},
		{"wireguard", `{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=","Port":"51820"}`, false},
		{"wireguard", `null`, false},
	} {
		if err := v(tc.typ, json.RawMessage(tc.data)); (err == nil) != tc.ok {
			t.Errorf("validate(%s, %s) = %v, want ok=%v", tc.typ, tc.data, err, tc.ok)
		}
	}
	// Through the control plane's lease check.
	l := &subnet.Lease{
		Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		Attrs:  subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.0.3"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`)},
	}
	if err := cfg.ValidateLease(l, v); err == nil || !strings.Contains(err.Error(), "10.244.3.0-24") {
		t.Errorf("ValidateLease with a broadcast VtepMAC = %v", err)
	}
}
