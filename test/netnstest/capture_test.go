package netnstest

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// frame builds an Ethernet frame of the given type around an IP packet.
func frame(etherType uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:14], etherType)
	return append(f, ip...)
}

func TestParseIP(t *testing.T) {
	udp := []byte{0xca, 0x5c, 0xca, 0x5d, 0, 8, 0, 0} // 51804 > 51805
	v4 := make([]byte, 20)
	v4[0], v4[9] = 0x45, unix.IPPROTO_UDP
	copy(v4[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	v6 := make([]byte, 40)
	v6[0], v6[6] = 0x60, unix.IPPROTO_UDP
	src, dst := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::2").As16()
	copy(v6[8:], src[:])
	copy(v6[24:], dst[:])
	icmp6 := append([]byte(nil), v6...)
	icmp6[6] = unix.IPPROTO_ICMPV6
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
		want  string
	}{
		{"udp over IPv4", frame(unix.ETH_P_IP, append(v4, udp...)), true, "udp 192.0.2.1:51804 > 192.0.2.2:51805"},
		{"udp over IPv6", frame(unix.ETH_P_IPV6, append(v6, udp...)), true, "udp [2001:db8::1]:51804 > [2001:db8::2]:51805"},
		{"icmpv6", frame(unix.ETH_P_IPV6, icmp6), true, "icmpv6 2001:db8::1 > 2001:db8::2"},
		{"short IPv6", frame(unix.ETH_P_IPV6, v6[:30]), false, ""},
		{"ARP", frame(unix.ETH_P_ARP, make([]byte, 28)), false, ""},
		{"IPv6 ethertype, version 4", frame(unix.ETH_P_IPV6, append(append([]byte(nil), v4...), make([]byte, 20)...)), false, ""},
	} {
		p, ok := ParseIP(tc.frame)
		if ok != tc.ok || (ok && p.String() != tc.want) {
			t.Errorf("%s: ParseIP = %v %v, want %v %q", tc.name, p, ok, tc.ok, tc.want)
		}
	}
	if _, ok := ParseIPv4(frame(unix.ETH_P_IPV6, append(v6, udp...))); ok {
		t.Error("ParseIPv4 took an IPv6 frame")
	}
}
