package etcd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestOpsDualStack: the operator's view of a dual-stack and an IPv6-only
// network: listing, reserving, finding and deleting by a subnet of either
// family, with flanneld's keys.
func TestOpsDualStack(t *testing.T) {
	t.Parallel()
	cli, s, ctx := opsEnv(t)
	put(t, cli, testPrefix+"/config", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	put(t, cli, testPrefix+"/subnets/10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"192.0.2.3","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:03"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:03"}}`)
	put(t, cli, testPrefix+"/subnets/10.244.4.0-24&fd00:10:244:4::-64", `{"PublicIP":"192.0.2.4","PublicIPv6":"fe80::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"06:00:00:00:00:04"}}`)

	ls, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Entries) != 2 || ls.Entries[0].Invalid != nil || ls.Entries[0].Lease.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:3::/64") ||
		ls.Entries[1].Invalid == nil || !strings.Contains(ls.Entries[1].Invalid.Error(), "PublicIPv6 fe80::4") {
		t.Errorf("listing %+v", ls.Entries)
	}
	for _, sn := range []string{"10.244.3.0/24", "fd00:10:244:3::/64"} {
		l, err := s.GetLease(ctx, netip.MustParsePrefix(sn))
		if err != nil || l == nil || l.Key() != "10.244.3.0-24&fd00:10:244:3::-64" {
			t.Errorf("GetLease(%s) = %+v, %v", sn, l, err)
		}
	}

	what, err := s.ReserveSubnets(ctx, netip.MustParsePrefix("10.244.9.0/24"), netip.MustParsePrefix("fd00:10:244:9::/64"),
		netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9"))
	if err != nil || what != "reserved" {
		t.Fatalf("reserve: %q, %v", what, err)
	}
	got, _ := cli.Get(ctx, testPrefix+"/subnets/10.244.9.0-24&fd00:10:244:9::-64")
	if len(got.Kvs) != 1 || got.Kvs[0].Lease != 0 || string(got.Kvs[0].Value) != `{"PublicIP":"192.0.2.9","PublicIPv6":"2001:db8::9","BackendType":"vxlan"}` {
		t.Errorf("reservation stored as %+v", got.Kvs)
	}
	for _, tc := range []struct {
		name     string
		sn4, sn6 string
		ip4, ip6 string
		want     string
	}{
		{"IPv4 only in dual-stack", "10.244.10.0/24", "", "192.0.2.10", "", "IPv6 is on"},
		{"IPv6 subnet held", "10.244.11.0/24", "fd00:10:244:3::/64", "192.0.2.11", "2001:db8::11", "held by 192.0.2.3"},
		{"IPv4 subnet held", "10.244.3.0/24", "fd00:10:244:12::/64", "192.0.2.12", "2001:db8::12", "held by 192.0.2.3"},
		{"IPv6 outside", "10.244.13.0/24", "fd00:99::/64", "192.0.2.13", "2001:db8::13", "not a /64 inside IPv6 network"},
	} {
		p := func(s string) netip.Prefix {
			if s == "" {
				return netip.Prefix{}
			}
			return netip.MustParsePrefix(s)
		}
		a := func(s string) netip.Addr {
			if s == "" {
				return netip.Addr{}
			}
			return netip.MustParseAddr(s)
		}
		if _, err := s.ReserveSubnets(ctx, p(tc.sn4), p(tc.sn6), a(tc.ip4), a(tc.ip6)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Deleting by either subnet removes the node's key.
	if err := s.DeleteSubnet(ctx, netip.MustParsePrefix("fd00:10:244:9::/64")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubnet(ctx, netip.MustParsePrefix("10.244.9.0/24")); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}

	// IPv6-only: flanneld's key, PublicIP "0.0.0.0".
	put(t, cli, testPrefix+"/config", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	if _, err := s.ReserveSubnets(ctx, netip.Prefix{}, netip.MustParsePrefix("fd00:10:244:20::/64"), netip.Addr{}, netip.MustParseAddr("2001:db8::20")); err != nil {
		t.Fatal(err)
	}
	got, _ = cli.Get(ctx, testPrefix+"/subnets/0.0.0.0-0&fd00:10:244:20::-64", clientv3.WithPrefix())
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::20","BackendType":"vxlan"}` {
		t.Errorf("IPv6-only reservation stored as %+v", got.Kvs)
	}
	if l, err := s.GetLease(ctx, netip.MustParsePrefix("fd00:10:244:20::/64")); err != nil || l == nil || l.Subnet.IsValid() || !l.Reserved() {
		t.Errorf("GetLease of the IPv6-only reservation: %+v, %v", l, err)
	}
}
