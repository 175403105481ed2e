package leases

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/etcdtest"
)

// TestDualStackLeases: listing, reserving and releasing in dual-stack and
// IPv6-only networks, with flanneld's keys.
func TestDualStackLeases(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	put := func(k, v string) {
		if _, err := c.Put(ctx, prefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("/config", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	put("/subnets/10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"192.0.2.3","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:03"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:03"}}`)
	put("/subnets/10.244.4.0-24&fd00:10:244:4::-64", `{"PublicIP":"192.0.2.4","PublicIPv6":"fe80::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:04"}}`)

	rep, err := List(ctx, c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Network != "10.244.0.0/16" || rep.IPv6Network != "fd00:10:244::/56" || len(rep.Leases) != 2 {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Leases[0]
	if r.Subnet != "10.244.3.0/24" || r.IPv6Subnet != "fd00:10:244:3::/64" || r.PublicIPv6 != "2001:db8::3" || r.VtepMACv6 != "06:00:00:00:00:03" || r.Invalid != "" {
		t.Errorf("row %+v", r)
	}
	if !strings.Contains(rep.Leases[1].Invalid, "PublicIPv6 fe80::4") {
		t.Errorf("a bad IPv6 part is not reported: %+v", rep.Leases[1])
	}
	var table bytes.Buffer
	if err := RenderTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"network 10.244.0.0/16 and fd00:10:244::/56", "10.244.3.0/24 fd00:10:244:3::/64", "192.0.2.3 2001:db8::3", "02:00:00:00:00:03 06:00:00:00:00:03"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	sn, err := ParseSubnets("10.244.9.0/24,fd00:10:244:9::/64")
	if err != nil {
		t.Fatal(err)
	}
	ip4, ip6, err := ParseAddrs("192.0.2.9,2001:db8::9")
	if err != nil {
		t.Fatal(err)
	}
	if what, err := ReserveSubnets(ctx, c, prefix, sn, ip4, ip6); err != nil || what != "reserved" {
		t.Fatalf("reserve: %q, %v", what, err)
	}
	got, _ := c.Get(ctx, prefix+"/subnets/10.244.9.0-24&fd00:10:244:9::-64")
	if len(got.Kvs) != 1 || got.Kvs[0].Lease != 0 || string(got.Kvs[0].Value) != `{"PublicIP":"192.0.2.9","PublicIPv6":"2001:db8::9","BackendType":"vxlan"}` {
		t.Errorf("reservation stored as %+v", got.Kvs)
	}
	for _, tc := range []struct {
		name, subnets, ips, want string
	}{
		{"IPv4 only in dual-stack", "10.244.10.0/24", "192.0.2.10", "IPv6 is on"},
		{"IPv6 subnet held", "10.244.11.0/24,fd00:10:244:3::/64", "192.0.2.11,2001:db8::11", "held by 192.0.2.3"},
		{"IPv4 subnet held", "10.244.3.0/24,fd00:10:244:12::/64", "192.0.2.12,2001:db8::12", "held by 192.0.2.3"},
		{"IPv6 outside", "10.244.13.0/24,fd00:99::/64", "192.0.2.13,2001:db8::13", "not a /64 inside IPv6 network"},
	} {
		sn, err := ParseSubnets(tc.subnets)
		if err != nil {
			t.Fatal(err)
		}
		ip4, ip6, err := ParseAddrs(tc.ips)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReserveSubnets(ctx, c, prefix, sn, ip4, ip6); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Releasing either subnet removes the node's key.
	if err := Release(ctx, c, prefix, netip.MustParsePrefix("fd00:10:244:9::/64")); err != nil {
		t.Fatal(err)
	}
	if err := Release(ctx, c, prefix, netip.MustParsePrefix("10.244.9.0/24")); !errors.Is(err, ErrNotFound) {
		t.Errorf("second release: %v", err)
	}

	// IPv6-only: flanneld's key, PublicIP "0.0.0.0".
	put("/config", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	sn, _ = ParseSubnets("fd00:10:244:20::/64")
	if _, err := ReserveSubnets(ctx, c, prefix, sn, netip.Addr{}, netip.MustParseAddr("2001:db8::20")); err != nil {
		t.Fatal(err)
	}
	got, _ = c.Get(ctx, prefix+"/subnets/0.0.0.0-0&fd00:10:244:20::-64")
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::20","BackendType":"vxlan"}` {
		t.Errorf("IPv6-only reservation stored as %+v", got.Kvs)
	}
	rep, err = List(ctx, c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	last := rep.Leases[len(rep.Leases)-1]
	if last.Key != "0.0.0.0-0&fd00:10:244:20::-64" || last.Subnet != "" || last.IPv6Subnet != "fd00:10:244:20::/64" || last.PublicIPv6 != "2001:db8::20" || !last.Reservation {
		t.Errorf("IPv6-only row %+v", last)
	}
}

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
