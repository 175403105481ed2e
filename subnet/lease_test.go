package subnet

import (
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/netip"
	"strings"
	"testing"
)

// flannelLease is the value flannel v0.28.9 writes for a VXLAN lease: the
// etcd registry's createSubnet (pkg/subnet/etcd/registry.go) stores
// json.Marshal of lease.LeaseAttrs (pkg/lease/lease.go), whose BackendData
// is the vxlan backend's vxlanLeaseAttrs (pkg/backend/vxlan/vxlan.go).
const flannelLease = `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`

func TestLeaseAttrsGolden(t *testing.T) {
	a := LeaseAttrs{
		PublicIP:    netip.MustParseAddr("192.168.64.3"),
		BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`),
	}
	got, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != flannelLease {
		t.Fatalf("Marshal:\n got %s\nwant %s", got, flannelLease)
	}
	back, err := ParseLeaseAttrs([]byte(flannelLease))
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(a) || back.PublicIPv6 != nil {
		t.Fatalf("ParseLeaseAttrs(%s) = %+v, want %+v", flannelLease, back, a)
	}
	again, err := back.Marshal()
	if err != nil || string(again) != flannelLease {
		t.Fatalf("re-Marshal = %s, %v; want %s", again, err, flannelLease)
	}
}

func TestLeaseAttrsDualStack(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::3")
	a := LeaseAttrs{
		PublicIP:      netip.MustParseAddr("192.168.64.3"),
		PublicIPv6:    &v6,
		BackendType:   "vxlan",
		BackendData:   json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`),
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`),
	}
	want := `{"PublicIP":"192.168.64.3","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`
	got, err := a.Marshal()
	if err != nil || string(got) != want {
		t.Fatalf("Marshal = %s, %v\nwant %s", got, err, want)
	}
	back, err := ParseLeaseAttrs(got)
	if err != nil || !back.Equal(a) {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
}

// TestLeaseAttrsAbsentFamilies: flannel's encoding of a node without IPv4
// or IPv6 (v0.28.9 pkg/lease/lease.go LeaseAttrs through json.Marshal: a
// zero ip.IP4 marshals as "0.0.0.0", a nil *ip.IP6 as null), and both read
// back as absent.
func TestLeaseAttrsAbsentFamilies(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::10")
	tests := []struct {
		name string
		a    LeaseAttrs
		want string
	}{
		{"nothing", LeaseAttrs{}, `{"PublicIP":"0.0.0.0","PublicIPv6":null}`},
		{"IPv6 only", LeaseAttrs{PublicIPv6: &v6, BackendType: "vxlan", BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)},
			`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::10","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`},
		{"host-gw dual", LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.1.10"), PublicIPv6: &v6, BackendType: "host-gw"},
			`{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"host-gw"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.Marshal()
			if err != nil || string(got) != tt.want {
				t.Fatalf("Marshal = %s, %v\nwant %s", got, err, tt.want)
			}
			back, err := ParseLeaseAttrs(got)
			if err != nil || !back.Equal(tt.a) || back.PublicIP.IsValid() != tt.a.PublicIP.IsValid() || (back.PublicIPv6 == nil) != (tt.a.PublicIPv6 == nil) {
				t.Fatalf("ParseLeaseAttrs(%s) = %+v, %v; want %+v", got, back, err, tt.a)
			}
		})
	}
	for _, in := range []string{`{"PublicIP":"0.0.0.0","PublicIPv6":"::"}`, `{"PublicIP":"","PublicIPv6":""}`, `{}`} {
		a, err := ParseLeaseAttrs([]byte(in))
		if err != nil || a.PublicIP.IsValid() || a.PublicIPv6 != nil || a.NodeIP().IsValid() {
			t.Errorf("ParseLeaseAttrs(%s) = %+v, %v; want both addresses absent", in, a, err)
		}
	}
}

func TestParseLeaseAttrsErrors(t *testing.T) {
	for _, in := range []string{`{"PublicIP":`, `{"PublicIP":"300.1.1.1"}`, `{"PublicIP":5}`, `[]`, ``, `{"PublicIPv6":"fd00::zz"}`, `{"PublicIPv6":7}`} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseLeaseAttrs([]byte(in))
			if !errors.Is(err, ErrInvalidLease) {
				t.Fatalf("ParseLeaseAttrs(%q) = %v, want ErrInvalidLease", in, err)
			}
		})
	}
}

func TestSubnetKeyRoundTrip(t *testing.T) {
	tests := []struct {
		key    string
		v4, v6 string
	}{
		{"10.244.3.0-24", "10.244.3.0/24", ""},
		{"10.244.52.0-24&fd00:0:0:34::-64", "10.244.52.0/24", "fd00:0:0:34::/64"},
		// flannel v0.28.9 pkg/subnet/subnet_test.go TestMakeSubnetKey's case.
		{"10.12.13.0-24&fd00:12:13::-56", "10.12.13.0/24", "fd00:12:13::/56"},
		// IPv6-only: flannel's MakeSubnetKey with a zero IP4Net.
		{"0.0.0.0-0&fd00:0:0:34::-64", "", "fd00:0:0:34::/64"},
		{"0.0.0.0-0&2001:db8:1:2::-64", "", "2001:db8:1:2::/64"},
		{"10.0.0.4-30", "10.0.0.4/30", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			v4, v6, err := ParseSubnetKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			var w4, w6 netip.Prefix
			if tt.v4 != "" {
				w4 = netip.MustParsePrefix(tt.v4)
			}
			if tt.v6 != "" {
				w6 = netip.MustParsePrefix(tt.v6)
			}
			if v4 != w4 || v6 != w6 {
				t.Fatalf("ParseSubnetKey(%q) = %s, %s; want %s, %s", tt.key, v4, v6, w4, w6)
			}
			if got := SubnetKey(v4, v6); got != tt.key {
				t.Fatalf("SubnetKey = %q, want %q", got, tt.key)
			}
			l := Lease{Subnet: v4, IPv6Subnet: v6}
			if l.Key() != tt.key {
				t.Fatalf("Lease.Key = %q", l.Key())
			}
		})
	}
}

func TestParseSubnetKeyErrors(t *testing.T) {
	for _, key := range []string{
		"", "10.244.3.0", "10.244.3.0/24", "10.244.3.0-33", "10.244.3.1-24", "10.244.3.0-", "-24",
		"a-b", "10.0.0.0-24&10.1.0.0-24", "fd00::-64&fd01::-64", "1.0.0.0-8&fd00::-64&fd01::-64",
		"fe80::%eth0-64", "10.244.3.0-24&", "not-a-subnet", "10.244.3.0-024x",
		// flannel's regex needs the IPv4 part first; 0.0.0.0-0 alone names nothing.
		"fd00:0:0:34::-64", "0.0.0.0-0", "0.0.0.0-0&", "fd00::-64&10.0.0.0-24",
		// Not canonical: would name another etcd key than the one read.
		"10.244.3.0-24&FD00::-64", "10.244.3.0-24&fd00:0:0:0::-64", "0.0.0.0-0&::ffff:10.0.0.0-120",
	} {
		t.Run(key, func(t *testing.T) {
			v4, v6, err := ParseSubnetKey(key)
			if err == nil {
				t.Fatalf("ParseSubnetKey(%q) = %s, %s; want an error", key, v4, v6)
			}
			if !errors.Is(err, ErrInvalidLease) || !strings.Contains(err.Error(), key) {
				t.Errorf("error %q should wrap ErrInvalidLease and quote the key", err)
			}
		})
	}
}

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"10.244.3.0-24", "10.244.52.0-24&fd00:0:0:34::-64", "fd00::-64", "x", "1.2.3.4-32&", "::ffff:10.0.0.0-120"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseSubnetKey(key)
		if err != nil {
			return
		}
		if v4.IsValid() && (!v4.Addr().Is4() || v4.Masked() != v4) {
			t.Fatalf("bad v4 %s from %q", v4, key)
		}
		if v6.IsValid() && (v6.Addr().Is4() || v6.Masked() != v6) {
			t.Fatalf("bad v6 %s from %q", v6, key)
		}
		k2 := SubnetKey(v4, v6)
		a4, a6, err := ParseSubnetKey(k2)
		if err != nil || a4 != v4 || a6 != v6 {
			t.Fatalf("%q -> %s,%s -> %q -> %s,%s (%v)", key, v4, v6, k2, a4, a6, err)
		}
	})
}

func FuzzSubnetKeyFromPrefix(f *testing.F) {
	f.Add([]byte{10, 244, 3, 0}, 24, []byte{0xfd, 0, 0, 0, 0, 0, 0, 0x34, 0, 0, 0, 0, 0, 0, 0, 0}, 64)
	f.Fuzz(func(t *testing.T, a4 []byte, b4 int, a6 []byte, b6 int) {
		var v4, v6 netip.Prefix
		if ip, ok := netip.AddrFromSlice(a4); ok && ip.Is4() && b4 >= 0 && b4 <= 32 {
			v4 = netip.PrefixFrom(ip, b4).Masked()
		}
		if ip, ok := netip.AddrFromSlice(a6); ok && ip.Is6() && !ip.Is4In6() && b6 >= 0 && b6 <= 128 {
			v6 = netip.PrefixFrom(ip, b6).Masked()
		}
		if v4 == netip.MustParsePrefix("0.0.0.0/0") {
			return // flannel's zero IP4Net: the same key as no IPv4 part
		}
		if !v4.IsValid() && !v6.IsValid() {
			return
		}
		key := SubnetKey(v4, v6)
		g4, g6, err := ParseSubnetKey(key)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Fatalf("SubnetKey(%s, %s) = %q -> %s, %s, %v", v4, v6, key, g4, g6, err)
		}
	})
}

func TestValidateLease(t *testing.T) {
	cfg, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	good := func() Lease {
		return Lease{
			Subnet: netip.MustParsePrefix("10.244.3.0/24"),
			Attrs: LeaseAttrs{
				PublicIP:    netip.MustParseAddr("192.168.64.3"),
				BackendType: "vxlan",
				BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`),
			},
		}
	}
	rejectMAC := func(typ string, data json.RawMessage) error {
		if strings.Contains(string(data), "ff:ff:ff:ff:ff:ff") {
			return errors.New("VtepMAC is not unicast")
		}
		return nil
	}
	tests := []struct {
		name   string
		modify func(*Lease)
		want   string // "" = valid
	}{
		{"valid", func(*Lease) {}, ""},
		{"first subnet is still a valid peer", func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.244.0.0/24") }, ""},
		{"outside network", func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.245.3.0/24") }, "not a /24 inside network 10.244.0.0/16"},
		{"wrong length", func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.244.3.0/25") }, "not a /24"},
		{"no IPv4 subnet", func(l *Lease) { l.Subnet = netip.Prefix{}; l.IPv6Subnet = netip.MustParsePrefix("fd00::/64") }, "no IPv4 subnet"},
		{"PublicIP missing", func(l *Lease) { l.Attrs.PublicIP = netip.Addr{} }, "PublicIP is missing"},
		{"PublicIP loopback", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1") }, "PublicIP 127.0.0.1"},
		{"PublicIP unspecified", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("0.0.0.0") }, "PublicIP 0.0.0.0"},
		{"PublicIP multicast", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("224.0.0.1") }, "PublicIP 224.0.0.1"},
		{"PublicIP broadcast", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("255.255.255.255") }, "PublicIP 255.255.255.255"},
		{"PublicIP IPv6", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("fd00::1") }, "not a unicast IPv4"},
		{"wrong backend", func(l *Lease) { l.Attrs.BackendType = "host-gw" }, `BackendType "host-gw"`},
		{"backend data rejected", func(l *Lease) { l.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`) }, "VtepMAC is not unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := good()
			tt.modify(&l)
			err := cfg.ValidateLease(&l, rejectMAC)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateLease: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateLease accepted %+v", l)
			}
			if !errors.Is(err, ErrInvalidLease) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), l.Key()) {
				t.Errorf("error %q: want ErrInvalidLease mentioning %q and key %q", err, tt.want, l.Key())
			}
		})
	}
	t.Run("nil validator accepts any data", func(t *testing.T) {
		l := good()
		l.Attrs.BackendData = json.RawMessage(`{"VtepMAC":"ff:ff:ff:ff:ff:ff"}`)
		if err := cfg.ValidateLease(&l, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{EventAdded: "added", EventChanged: "changed", EventRemoved: "removed", 9: "EventType(9)"} {
		if typ.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(typ), typ.String(), want)
		}
	}
}

// TestValidateLeaseFamilies: each family of a lease is checked when the
// config has it on and ignored when off; with IPv6 on, an IPv4 cluster's
// lease without an IPv6 part stays a (IPv4-only) peer.
func TestValidateLeaseFamilies(t *testing.T) {
	parse := func(s string) *Config {
		c, _, err := ParseConfig([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dual := parse(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	v6only := parse(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	v4only := parse(`{"Network":"10.244.0.0/16"}`)
	pub6 := netip.MustParseAddr("2001:db8::3")
	data := json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)
	data6 := json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`)
	good := func() Lease {
		v6 := pub6
		return Lease{
			Subnet:     netip.MustParsePrefix("10.244.3.0/24"),
			IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64"),
			Attrs: LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.64.3"), PublicIPv6: &v6, BackendType: "vxlan",
				BackendData: data, BackendV6Data: data6},
		}
	}
	rejectMAC := func(typ string, data json.RawMessage) error {
		if len(data) == 0 {
			return errors.New("BackendData is missing")
		}
		if strings.Contains(string(data), "ff:ff:ff:ff:ff:ff") {
			return errors.New("VtepMAC is not unicast")
		}
		return nil
	}
	ptr := func(s string) *netip.Addr { a := netip.MustParseAddr(s); return &a }
	tests := []struct {
		name   string
		cfg    *Config
		modify func(*Lease)
		want   string
	}{
		{"dual valid", dual, func(*Lease) {}, ""},
		{"dual: IPv4-only peer while IPv6 is being turned on", dual, func(l *Lease) {
			l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data = netip.Prefix{}, nil, nil
		}, ""},
		{"dual: IPv6 subnet outside", dual, func(l *Lease) { l.IPv6Subnet = netip.MustParsePrefix("fd00:10:245::/64") }, "is not a /64 inside IPv6 network fd00:10:244::/56"},
		{"dual: IPv6 subnet wrong length", dual, func(l *Lease) { l.IPv6Subnet = netip.MustParsePrefix("fd00:10:244::/60") }, "not a /64"},
		{"dual: PublicIPv6 missing", dual, func(l *Lease) { l.Attrs.PublicIPv6 = nil }, "PublicIPv6 is missing"},
		{"dual: PublicIPv6 link-local", dual, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("fe80::1") }, "PublicIPv6 fe80::1 is not a global unicast"},
		{"dual: PublicIPv6 loopback", dual, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("::1") }, "PublicIPv6 ::1"},
		{"dual: PublicIPv6 multicast", dual, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("ff02::1") }, "PublicIPv6 ff02::1"},
		{"dual: PublicIPv6 is IPv4", dual, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("192.0.2.1") }, "PublicIPv6 192.0.2.1"},
		{"dual: PublicIPv6 IPv4-mapped", dual, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("::ffff:192.0.2.1") }, "PublicIPv6 ::ffff:192.0.2.1"},
		{"dual: bad v6 MAC", dual, func(l *Lease) { l.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`) }, "BackendV6Data"},
		{"dual: v6 data missing", dual, func(l *Lease) { l.Attrs.BackendV6Data = nil }, "BackendV6Data"},
		{"dual: no IPv4 part", dual, func(l *Lease) { l.Subnet = netip.Prefix{} }, "no IPv4 subnet"},
		{"v6only valid", v6only, func(l *Lease) { l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData = netip.Prefix{}, netip.Addr{}, nil }, ""},
		{"v6only ignores an IPv4 part", v6only, func(*Lease) {}, ""},
		{"v6only needs IPv6", v6only, func(l *Lease) { l.IPv6Subnet = netip.Prefix{} }, "no IPv6 subnet"},
		{"v6only bad PublicIPv6", v6only, func(l *Lease) { l.Attrs.PublicIPv6 = ptr("::") }, "PublicIPv6 ::"},
		{"v4only ignores a bad IPv6 part", v4only, func(l *Lease) { l.IPv6Subnet = netip.MustParsePrefix("fd99::/64"); l.Attrs.PublicIPv6 = ptr("fe80::1") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := good()
			tt.modify(&l)
			err := tt.cfg.ValidateLease(&l, rejectMAC)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateLease: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidLease) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), l.Key()) {
				t.Fatalf("ValidateLease(%+v) = %v; want ErrInvalidLease mentioning %q and key %q", l, err, tt.want, l.Key())
			}
		})
	}
}

// TestDigestAgreesWithEqual checks that LeaseAttrs.Digest tells apart
// exactly the attributes that Equal does.
func TestDigestAgreesWithEqual(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::1")
	zero6 := netip.Addr{}
	base := LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.0.2"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)}
	with := func(f func(*LeaseAttrs)) LeaseAttrs { a := base; f(&a); return a }
	others := map[string]LeaseAttrs{
		"the same":              base,
		"spaces in the data":    with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(` { "VNI": 1, "VtepMAC": "02:00:00:00:00:01" } `) }),
		"keys in another order": with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(`{"VtepMAC":"02:00:00:00:00:01","VNI":1}`) }),
		"another MAC":           with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`) }),
		"another public IP":     with(func(a *LeaseAttrs) { a.PublicIP = netip.MustParseAddr("192.168.0.3") }),
		"an IPv6 address":       with(func(a *LeaseAttrs) { a.PublicIPv6 = &v6 }),
		"a zero IPv6 address":   with(func(a *LeaseAttrs) { a.PublicIPv6 = &zero6 }),
		"another type":          with(func(a *LeaseAttrs) { a.BackendType = "host-gw" }),
		"no data":               with(func(a *LeaseAttrs) { a.BackendData = nil }),
		"empty data":            with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage{} }),
		"null data":             with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(`null`) }),
		"invalid data":          with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(`{"VNI":`) }),
		"other invalid data":    with(func(a *LeaseAttrs) { a.BackendData = json.RawMessage(`{"VNI": `) }),
		"the data in the IPv6 field": with(func(a *LeaseAttrs) {
			a.BackendData, a.BackendV6Data = nil, a.BackendData
		}),
		"part of the type in the data": with(func(a *LeaseAttrs) { a.BackendType, a.BackendData = "vxla", json.RawMessage(`"n"`) }),
	}
	seeds := [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
	for na, a := range others {
		for nb, b := range others {
			if eq, same := a.Equal(b), a.Digest(seeds) == b.Digest(seeds); eq != same {
				t.Errorf("%s vs %s: Equal %v, digests equal %v", na, nb, eq, same)
			}
		}
	}
}
