package netlinkx

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file holds the read-mostly host queries of the packages above the
// seam that are not backends: the agent choosing its external interface,
// `weft node teardown` finding what weftd left, the lab finding a free
// underlay range and its own links. They live here so that nothing outside
// kernel/ imports the netlink library.

// Addr is an address of a link, with its prefix length.
type Addr struct {
	LinkIndex int
	// Prefix is the address with the length of its subnet (10.0.0.5/24).
	Prefix netip.Prefix
	// Global is true for scope universe (not host- or link-scoped).
	Global bool
	// For IPv6 addresses: Unusable is true while duplicate address
	// detection runs or after it failed, and for a deprecated address;
	// Dynamic for an address that is not permanent (autoconfigured);
	// Temporary for a privacy address.
	Unusable, Dynamic, Temporary bool
}

// DefaultRoute is a default route of the main table.
type DefaultRoute struct {
	LinkIndex int
	Gw        netip.Addr
	// Src is the route's preferred source address, if it names one.
	Src netip.Addr
}

// Links lists every link of the Handle's namespace.
func (h *Handle) Links() ([]Link, error) {
	ls, err := retryDump("links", h.h.LinkList)
	if err != nil {
		return nil, err
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		out = append(out, fromNetlinkLink(l))
	}
	return out, nil
}

// AddrList lists the IPv4 addresses of link index, or of every link when
// index is 0, in the kernel's order.
func (h *Handle) AddrList(index int) ([]Addr, error) { return h.addrList(index, netlink.FAMILY_V4) }

// AddrList6 lists the IPv6 addresses of link index, or of every link when
// index is 0, in the kernel's order, with the flags that rank them.
func (h *Handle) AddrList6(index int) ([]Addr, error) { return h.addrList(index, netlink.FAMILY_V6) }

func (h *Handle) addrList(index, fam int) ([]Addr, error) {
	var link netlink.Link
	what := "addresses"
	if index != 0 {
		link = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
		what = fmt.Sprintf("addresses of link #%d", index)
	}
	as, err := retryDump(what, func() ([]netlink.Addr, error) { return h.h.AddrList(link, fam) })
	if err != nil {
		return nil, err
	}
	out := make([]Addr, 0, len(as))
	for _, a := range as {
		p, ok := prefixFrom(a.IPNet)
		if !ok || p.Addr().Is4() != (fam == netlink.FAMILY_V4) {
			continue
		}
		out = append(out, Addr{LinkIndex: a.LinkIndex, Prefix: p, Global: a.Scope == unix.RT_SCOPE_UNIVERSE,
			Unusable:  a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) != 0,
			Dynamic:   fam == netlink.FAMILY_V6 && a.Flags&unix.IFA_F_PERMANENT == 0,
			Temporary: a.Flags&unix.IFA_F_TEMPORARY != 0})
	}
	return out, nil
}

// DefaultRoutes lists the IPv4 default routes of the main table.
func (h *Handle) DefaultRoutes() ([]DefaultRoute, error) { return h.defaultRoutes(netlink.FAMILY_V4) }

// DefaultRoutes6 lists the IPv6 default routes of the main table.
func (h *Handle) DefaultRoutes6() ([]DefaultRoute, error) { return h.defaultRoutes(netlink.FAMILY_V6) }

func (h *Handle) defaultRoutes(fam int) ([]DefaultRoute, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	rs, err := retryDump("routes of the main table", func() ([]netlink.Route, error) {
		return h.h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	var out []DefaultRoute
	for _, r := range rs {
		if r.Dst != nil {
			if p, ok := prefixFrom(r.Dst); !ok || p.Bits() != 0 {
				continue
			}
		}
		out = append(out, DefaultRoute{LinkIndex: r.LinkIndex, Gw: addrFrom(r.Gw), Src: addrFrom(r.Src)})
	}
	return out, nil
}

// RouteDsts lists the destination of every IPv4 route in every table, of
// any type, except default routes.
func (h *Handle) RouteDsts() ([]netip.Prefix, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
	rs, err := retryDump("routes of every table", func() ([]netlink.Route, error) {
		return h.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range rs {
		if p, ok := prefixFrom(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}
