package wireguard

import (
	"net/netip"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/wg"
	"github.com/weftnet/weft/subnet"
)

// ula is fc00::/7, IPv6's private range (flanneld's auto mode prefers IPv4
// to a peer whose IPv6 address is in it).
var ula = netip.MustParsePrefix("fc00::/7")

// desiredSingle is desired for the one device of a single-tunnel Mode
// with IPv6 on: one peer per lease, whose allowed IPs are its subnets of
// each family, at the endpoint the Mode picks (ipv4: PublicIP, ipv6:
// PublicIPv6, auto: per peer, as flanneld's selectMode).
func (d *device) desiredSingle(s backend.State) ([]wg.Peer, []error) {
	b := d.b
	own := s.Own.Primary()
	primary := func(l *subnet.Lease) netip.Prefix { return l.Primary() }
	return d.collect(s, primary, func(sn netip.Prefix) bool { return sn == own }, func(p *subnet.Lease, fail func(string, ...any)) (wg.Peer, bool) {
		if p.Attrs.BackendType != TypeName {
			fail("BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			return wg.Peer{}, false
		}
		var allowed []netip.Prefix
		var d4, d6 *PeerData
		if b.Cfg.EnableIPv4 {
			ip := p.Attrs.PublicIP
			switch {
			case !b.Cfg.Contains(p.Subnet):
				fail("subnet %v is not a /%d of network %s", p.Subnet, b.Cfg.SubnetLen, b.Cfg.Network)
				return wg.Peer{}, false
			case !ip.Is4() || !subnet.IsUsableUnicast(ip):
				fail("PublicIP is not a unicast IPv4 address")
				return wg.Peer{}, false
			}
			pd, err := ParseBackendData(p.Attrs.BackendData)
			if err != nil {
				fail("%v", err)
				return wg.Peer{}, false
			}
			d4 = &pd
			allowed = append(allowed, p.Subnet)
		}
		if p.IPv6Subnet.IsValid() || !b.Cfg.EnableIPv4 {
			switch {
			case !b.Cfg.ContainsIPv6(p.IPv6Subnet):
				fail("IPv6 subnet %v is not a /%d of IPv6 network %s", p.IPv6Subnet, b.Cfg.IPv6SubnetLen, b.Cfg.IPv6Network)
				return wg.Peer{}, false
			case !subnet.IsUsableUnicast6(p.Attrs.IPv6()):
				fail("PublicIPv6 %v is not a global unicast IPv6 address", p.Attrs.IPv6())
				return wg.Peer{}, false
			}
			pd, err := ParseBackendData(p.Attrs.BackendV6Data)
			if err != nil {
				fail("BackendV6Data: %v", err)
				return wg.Peer{}, false
			}
			d6 = &pd
			allowed = append(allowed, p.IPv6Subnet)
		}
		if d4 != nil && d6 != nil && d4.PublicKey != d6.PublicKey {
			fail("BackendData and BackendV6Data advertise different keys (%s, %s); one device has one peer per key", d4.PublicKey, d6.PublicKey)
			return wg.Peer{}, false
		}
		key := d6
		if d4 != nil {
			key = d4
		}
		six, ok := d.endpointV6(p, d4 != nil, d6 != nil)
		if !ok {
			fail("Mode %q needs the peer's %s address, and its lease has none", b.opts.Mode, map[bool]string{false: "IPv4", true: "IPv6"}[b.opts.Mode == ModeIPv6])
			return wg.Peer{}, false
		}
		ip := p.Attrs.PublicIP
		if six {
			ip = p.Attrs.IPv6()
		}
		return wg.Peer{
			PublicKey:    key.PublicKey,
			PresharedKey: b.opts.PSK,
			Endpoint:     netip.AddrPortFrom(ip, uint16(b.opts.PeerPort(six, d4, d6))),
			AllowedIPs:   allowed,
			Keepalive:    b.opts.Keepalive,
		}, true
	})
}

// endpointV6 says whether the single tunnel reaches peer p over IPv6 (ok
// false when the Mode's family is one the peer lacks). auto is flanneld's
// selectMode: IPv4 if the peer has no IPv6; IPv4 if its PublicIP is not
// private (RFC 1918) and this node has an IPv4 address; IPv6 if its
// PublicIPv6 is not in fc00::/7 and this node's IPv6 address is set and
// not in fc00::/7; otherwise IPv4 (IPv6 for a peer without IPv4).
func (d *device) endpointV6(p *subnet.Lease, has4, has6 bool) (six, ok bool) {
	ext := d.b.Ext
	switch d.b.opts.Mode {
	case ModeIPv4:
		return false, has4
	case ModeIPv6:
		return true, has6
	}
	switch {
	case !has6:
		return false, has4
	case !has4:
		return true, true
	case !p.Attrs.PublicIP.IsPrivate() && ext.Addr.IsValid():
		return false, true
	case !ula.Contains(p.Attrs.IPv6()) && ext.Addr6.IsValid() && !ula.Contains(ext.Addr6):
		return true, true
	}
	return false, true
}
