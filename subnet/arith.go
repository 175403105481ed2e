package subnet

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// SubnetCount returns how many subnets of length subnetLen fit in network,
// saturating at math.MaxUint64.
func SubnetCount(network netip.Prefix, subnetLen int) uint64 {
	n := subnetLen - network.Bits()
	if n < 0 {
		return 0
	}
	if n >= 64 {
		return math.MaxUint64
	}
	return 1 << n
}

// SubnetAt returns the i-th subnet of length subnetLen in network (i from 0).
// It does not check that i is in range.
func SubnetAt(network netip.Prefix, subnetLen int, i uint64) netip.Prefix {
	return netip.PrefixFrom(addOffset(network.Masked().Addr(), i, network.Addr().BitLen()-subnetLen), subnetLen)
}

func lastSubnet(network netip.Prefix, subnetLen int) netip.Prefix {
	return SubnetAt(network, subnetLen, SubnetCount(network, subnetLen)-1)
}

// addOffset returns a + i<<shift, wrapping within the address family.
func addOffset(a netip.Addr, i uint64, shift int) netip.Addr {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var dhi, dlo uint64
	switch {
	case shift >= 128:
		return a
	case shift >= 64:
		dhi = i << (shift - 64)
	case shift == 0:
		dlo = i
	default:
		dlo = i << shift
		dhi = i >> (64 - shift)
	}
	lo2 := lo + dlo
	carry := uint64(0)
	if lo2 < lo {
		carry = 1
	}
	hi += dhi + carry
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo2)
	r := netip.AddrFrom16(b)
	if a.Is4() {
		return r.Unmap()
	}
	return r
}

// indexOf returns the index of subnet base address a within network for
// subnets of length subnetLen (the inverse of SubnetAt), for ranges that fit
// in a uint64 once shifted.
func indexOf(network netip.Prefix, subnetLen int, a netip.Addr) uint64 {
	shift := a.BitLen() - subnetLen
	x := a.As16()
	y := network.Masked().Addr().As16()
	xhi, xlo := binary.BigEndian.Uint64(x[:8]), binary.BigEndian.Uint64(x[8:])
	yhi, ylo := binary.BigEndian.Uint64(y[:8]), binary.BigEndian.Uint64(y[8:])
	lo := xlo - ylo
	borrow := uint64(0)
	if xlo < ylo {
		borrow = 1
	}
	hi := xhi - yhi - borrow
	switch {
	case shift >= 64:
		return hi >> (shift - 64)
	case shift == 0:
		return lo
	default:
		return lo>>shift | hi<<(64-shift)
	}
}

// SubnetRange is the set of subnets that may be leased: those of length Len
// in Network whose base addresses lie in [Min, Max].
type SubnetRange struct {
	Network netip.Prefix
	Len     int
	Min     netip.Addr
	Max     netip.Addr
}

// Count returns how many subnets the range holds (saturating).
func (r SubnetRange) Count() uint64 {
	lo, hi := indexOf(r.Network, r.Len, r.Min), indexOf(r.Network, r.Len, r.Max)
	if hi < lo {
		return 0
	}
	if hi-lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return hi - lo + 1
}

// At returns the i-th subnet of the range (i from 0, below Count()).
func (r SubnetRange) At(i uint64) netip.Prefix {
	return SubnetAt(r.Network, r.Len, indexOf(r.Network, r.Len, r.Min)+i)
}

// Contains reports whether p is one of the range's subnets.
func (r SubnetRange) Contains(p netip.Prefix) bool {
	if !p.IsValid() || p.Bits() != r.Len || p.Masked() != p || !r.Network.Contains(p.Addr()) {
		return false
	}
	a := p.Addr()
	return !a.Less(r.Min) && !r.Max.Less(a)
}

// All calls yield for every subnet of the range in order, until yield
// returns false.
func (r SubnetRange) All(yield func(netip.Prefix) bool) {
	n := r.Count()
	for i := uint64(0); i < n; i++ {
		if !yield(r.At(i)) {
			return
		}
	}
}
