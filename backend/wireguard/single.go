package wireguard

import (
	"net/netip"
	"slices"

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
	cmp := func(x, y subnet.Lease) int { return wg.ComparePrefix(x.Primary(), y.Primary()) }
	peers := s.Peers
	if !slices.IsSortedFunc(peers, cmp) {
		peers = slices.Clone(peers)
		slices.SortFunc(peers, cmp)
	}
	type cand struct {
		lease *subnet.Lease
		peer  wg.Peer
	}
	var cands []cand
	var errs []error
	byKey := map[wg.Key][]int{}
	own := s.Own.Primary()
	for i := 0; i < len(peers); {
		j := i + 1
		for j < len(peers) && peers[j].Primary() == peers[i].Primary() {
			j++
		}
		group := peers[i:j]
		i = j
		p := &group[0]
		if p.Primary() == own {
			continue
		}
		fail := func(p *subnet.Lease, format string, args ...any) {
			errs = append(errs, b.Skip(p, format, args...))
		}
		if len(group) > 1 {
			for k := range group {
				fail(&group[k], "another peer holds subnet %s", p.Primary())
			}
			continue
		}
		if p.Attrs.BackendType != TypeName {
			fail(p, "BackendType %q, want %q", p.Attrs.BackendType, TypeName)
			continue
		}
		var allowed []netip.Prefix
		var d4, d6 *PeerData
		if b.Cfg.EnableIPv4 {
			ip := p.Attrs.PublicIP
			switch {
			case !b.Cfg.Contains(p.Subnet):
				fail(p, "subnet %v is not a /%d of network %s", p.Subnet, b.Cfg.SubnetLen, b.Cfg.Network)
				continue
			case !ip.Is4() || !subnet.IsUsableUnicast(ip):
				fail(p, "PublicIP is not a unicast IPv4 address")
				continue
			}
			pd, err := ParseBackendData(p.Attrs.BackendData)
			if err != nil {
				fail(p, "%v", err)
				continue
			}
			d4 = &pd
			allowed = append(allowed, p.Subnet)
		}
		if p.IPv6Subnet.IsValid() || !b.Cfg.EnableIPv4 {
			switch {
			case !b.Cfg.ContainsIPv6(p.IPv6Subnet):
				fail(p, "IPv6 subnet %v is not a /%d of IPv6 network %s", p.IPv6Subnet, b.Cfg.IPv6SubnetLen, b.Cfg.IPv6Network)
				continue
			case !subnet.IsUsableUnicast6(p.Attrs.IPv6()):
				fail(p, "PublicIPv6 %v is not a global unicast IPv6 address", p.Attrs.IPv6())
				continue
			}
			pd, err := ParseBackendData(p.Attrs.BackendV6Data)
			if err != nil {
				fail(p, "BackendV6Data: %v", err)
				continue
			}
			d6 = &pd
			allowed = append(allowed, p.IPv6Subnet)
		}
		key := func() PeerData {
			if d4 != nil {
				return *d4
			}
			return *d6
		}().PublicKey
		if d4 != nil && d6 != nil && d4.PublicKey != d6.PublicKey {
			fail(p, "BackendData and BackendV6Data advertise different keys (%s, %s); one device has one peer per key", d4.PublicKey, d6.PublicKey)
			continue
		}
		if key == b.pub {
			fail(p, "its PublicKey %s is this node's own", key)
			continue
		}
		six, ok := d.endpointV6(p, d4 != nil, d6 != nil)
		if !ok {
			fail(p, "Mode %q needs the peer's %s address, and its lease has none", b.opts.Mode, map[bool]string{false: "IPv4", true: "IPv6"}[b.opts.Mode == ModeIPv6])
			continue
		}
		ip := p.Attrs.PublicIP
		if six {
			ip = p.Attrs.IPv6()
		}
		peer := wg.Peer{
			PublicKey:    key,
			PresharedKey: b.opts.PSK,
			Endpoint:     netip.AddrPortFrom(ip, uint16(b.opts.PeerPort(six, d4, d6))),
			AllowedIPs:   allowed,
			Keepalive:    b.opts.Keepalive,
		}
		byKey[key] = append(byKey[key], len(cands))
		cands = append(cands, cand{lease: p, peer: peer})
	}
	want := make([]wg.Peer, 0, len(cands))
	for _, c := range cands {
		if idx := byKey[c.peer.PublicKey]; len(idx) > 1 {
			errs = append(errs, b.Skip(c.lease, "PublicKey %s is also advertised by %d other peers", c.peer.PublicKey, len(idx)-1))
			continue
		}
		want = append(want, c.peer)
	}
	wg.SortPeers(want)
	return want, errs
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
