package vxlan

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// claimSet holds, by VtepMAC, the tunnel peers (subnets) that claim it, in
// subnet order: the first owns the MAC, the others are rivals. Nearly every
// MAC has one claimant, which costs one map entry and no allocation of its
// own; only rivals (a misconfiguration) take a slice.
type claimSet struct {
	first  map[netlinkx.MAC]netip.Prefix
	rivals map[netlinkx.MAC][]netip.Prefix
}

func newClaimSet() claimSet {
	return claimSet{first: make(map[netlinkx.MAC]netip.Prefix), rivals: make(map[netlinkx.MAC][]netip.Prefix)}
}

// add records that sn claims mac.
func (c claimSet) add(mac netlinkx.MAC, sn netip.Prefix) {
	cur, ok := c.first[mac]
	switch {
	case !ok:
		c.first[mac] = sn
	case subnet.CompareSubnets(sn, cur) < 0:
		c.first[mac] = sn
		c.insertRival(mac, cur)
	default:
		c.insertRival(mac, sn)
	}
}

func (c claimSet) insertRival(mac netlinkx.MAC, sn netip.Prefix) {
	r := c.rivals[mac]
	i, _ := slices.BinarySearchFunc(r, sn, subnet.CompareSubnets)
	c.rivals[mac] = slices.Insert(r, i, sn)
}

// remove forgets sn's claim on mac (if any); the first rival, if any,
// takes the MAC over.
func (c claimSet) remove(mac netlinkx.MAC, sn netip.Prefix) {
	r := c.rivals[mac]
	if cur, ok := c.first[mac]; ok && cur == sn {
		if len(r) == 0 {
			delete(c.first, mac)
			return
		}
		c.first[mac], r = r[0], r[1:]
	} else if i := slices.Index(r, sn); i >= 0 {
		r = slices.Delete(r, i, i+1)
	} else {
		return
	}
	if len(r) == 0 {
		delete(c.rivals, mac)
	} else {
		c.rivals[mac] = r
	}
}

// owner returns the first claimant of mac.
func (c claimSet) owner(mac netlinkx.MAC) (netip.Prefix, bool) {
	sn, ok := c.first[mac]
	return sn, ok
}

// others returns the rivals of mac's owner, in subnet order. The slice is
// the set's own: valid until the next add or remove.
func (c claimSet) others(mac netlinkx.MAC) []netip.Prefix { return c.rivals[mac] }
