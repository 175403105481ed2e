package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMarshalGolden(t *testing.T) {
	e := &Env{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet:   netip.MustParsePrefix("10.244.52.1/24"),
		MTU:      1450,
		IPMasq:   true,
	}
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if got := string(e.Marshal()); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  string
		check    func(*testing.T, *Env)
	}{
		{name: "flannel v0.28.9 WriteSubnetFile output", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			check: func(t *testing.T, e *Env) {
				if e.Subnet.String() != "10.244.52.1/24" || e.MTU != 1450 || !e.IPMasq || len(e.Networks) != 1 {
					t.Errorf("%+v", e)
				}
			}},
		{name: "comma list, dual stack, comments, quotes", in: "# written by weftd\nFLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=\"10.244.52.1/24\"\n" +
			"FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:34::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\nOTHER=1\n",
			check: func(t *testing.T, e *Env) {
				if len(e.Networks) != 2 || e.IPv6Subnet.String() != "fd00:10:244:34::1/64" || e.MTU != 1400 || e.IPMasq {
					t.Errorf("%+v", e)
				}
			}},
		{name: "empty", in: "", wantErr: "neither FLANNEL_NETWORK nor FLANNEL_IPV6_NETWORK"},
		{name: "truncated", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MT", wantErr: `"FLANNEL_MT" is not KEY=value`},
		{name: "no subnet", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", wantErr: "FLANNEL_SUBNET is missing"},
		{name: "no mtu", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_IPMASQ=true\n", wantErr: "FLANNEL_MTU is missing"},
		{name: "bad mtu", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=9x\nFLANNEL_IPMASQ=true\n", wantErr: `FLANNEL_MTU="9x"`},
		{name: "bad bool", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes please\n", wantErr: `FLANNEL_IPMASQ="yes please"`},
		{name: "bad subnet", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", wantErr: `FLANNEL_SUBNET="10.244.52.1" is not a CIDR`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Parse([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, e)
		})
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	if _, err := Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want fs.ErrNotExist", err)
	}
	e := &Env{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Subnet: netip.MustParsePrefix("10.244.3.1/24"), MTU: 1450}
	if err := Write(path, e); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Marshal()) != string(e.Marshal()) {
		t.Fatalf("round trip: %+v != %+v", got, e)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
}

// FuzzParse: Parse never panics, and whatever it accepts survives a
// Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	f.Add("FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00::1/64\nFLANNEL_MTU=1280\nFLANNEL_IPMASQ=0\n")
	f.Fuzz(func(t *testing.T, in string) {
		e, err := Parse([]byte(in))
		if err != nil {
			return
		}
		e2, err := Parse(e.Marshal())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", e.Marshal(), err)
		}
		if string(e2.Marshal()) != string(e.Marshal()) {
			t.Fatalf("round trip changed %q to %q", e.Marshal(), e2.Marshal())
		}
	})
}
