package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
)

// IfaceOptions says how to choose the external interface, as flanneld's
// -iface, -iface-regex, -public-ip and -public-ipv6 do.
type IfaceOptions struct {
	// Ifaces are interface names or addresses (of either family), tried in
	// order.
	Ifaces []string
	// Regexes match interface names or addresses, tried in order after Ifaces.
	Regexes []string
	// PublicIP overrides the IPv4 address advertised to peers.
	PublicIP netip.Addr
	// PublicIPv6 overrides the IPv6 address advertised to peers.
	PublicIPv6 netip.Addr
}

// chooseExternal finds the external interface in the current network
// namespace, with an address of each family that is on. The interface is
// chosen by the first family (IPv4, or IPv6 in an IPv6-only network): by
// -iface (a name, or an address of either family: flanneld dereferences nil
// for an IPv6 address in dual-stack), -iface-regex, or the default route;
// in dual-stack the IPv6 address is then the first global one of that
// interface (-public-ipv6 when it is one of them), and an IPv6 default route
// on another interface is an error, as in flanneld.
func chooseExternal(o IfaceOptions, v4, v6 bool) (backend.ExternalInterface, error) {
	if !v4 && !v6 {
		return backend.ExternalInterface{}, errors.New("choosing the interface: neither IPv4 nor IPv6 is on")
	}
	fam := unix.AF_INET
	if !v4 {
		fam = unix.AF_INET6
	}
	links, err := netlink.LinkList()
	if err != nil {
		return backend.ExternalInterface{}, fmt.Errorf("listing links: %w", err)
	}
	var l netlink.Link
	var a netip.Addr
	switch {
	case len(o.Ifaces) > 0:
		l, a, err = byNameOrAddr(links, o.Ifaces, fam)
	case len(o.Regexes) > 0:
		l, a, err = byRegex(links, o.Regexes, fam)
	case !v4 && o.PublicIPv6.IsValid():
		// flanneld's lookup key when no -iface is given: the interface
		// holding -public-ipv6, else the default route's.
		if l, a, err = byNameOrAddr(links, []string{o.PublicIPv6.String()}, fam); err != nil {
			l, a, err = byDefaultRoute(fam)
		}
	default:
		l, a, err = byDefaultRoute(fam)
	}
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	ext := backend.ExternalInterface{Name: l.Attrs().Name, Index: l.Attrs().Index, MTU: l.Attrs().MTU}
	if v4 {
		ext.Addr, ext.PublicIP = a, a
		if o.PublicIP.IsValid() {
			ext.PublicIP = o.PublicIP
		}
	}
	if v6 {
		if !v4 {
			ext.Addr6 = a
		} else if ext.Addr6, err = v6AddrOf(l, o.PublicIPv6); err != nil {
			return backend.ExternalInterface{}, err
		}
		if v4 && len(o.Ifaces) == 0 && len(o.Regexes) == 0 {
			if r6, _, err := byDefaultRoute(unix.AF_INET6); err == nil && r6.Attrs().Index != l.Attrs().Index {
				return backend.ExternalInterface{}, fmt.Errorf("the IPv6 default route is on %s, the IPv4 one on %s: in dual-stack both must use one interface (choose it with -iface)", r6.Attrs().Name, l.Attrs().Name)
			}
		}
		ext.PublicIPv6 = ext.Addr6
		if o.PublicIPv6.IsValid() {
			ext.PublicIPv6 = o.PublicIPv6
		}
	}
	return ext, nil
}

// v6AddrOf returns the IPv6 address of l that the IPv6 tunnel uses: pub
// when l has it, else the first of its global addresses.
func v6AddrOf(l netlink.Link, pub netip.Addr) (netip.Addr, error) {
	addrs, err := linkAddrs(l, unix.AF_INET6)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("interface %s has no global IPv6 address, and IPv6 is on in the network config", l.Attrs().Name)
	}
	if slices.Contains(addrs, pub) {
		return pub, nil
	}
	return addrs[0], nil
}

func famName(fam int) string {
	if fam == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

func byNameOrAddr(links []netlink.Link, wanted []string, fam int) (netlink.Link, netip.Addr, error) {
	var tried []string
	for _, w := range wanted {
		if a, err := netip.ParseAddr(w); err == nil {
			for _, l := range links {
				for _, f := range []int{unix.AF_INET, unix.AF_INET6} {
					addrs, _ := linkAddrs(l, f)
					if !slices.Contains(addrs, a) {
						continue
					}
					if f == fam {
						return l, a, nil
					}
					// An address of the other family names the interface.
					first, err := firstAddr(l, fam)
					if err != nil {
						tried = append(tried, fmt.Sprintf("%s is on %s, which has no global %s address", a, l.Attrs().Name, famName(fam)))
						break
					}
					return l, first, nil
				}
			}
			if len(tried) == 0 || !strings.Contains(tried[len(tried)-1], w) {
				tried = append(tried, fmt.Sprintf("no interface has address %s", a))
			}
			continue
		}
		for _, l := range links {
			if l.Attrs().Name == w {
				a, err := firstAddr(l, fam)
				if err != nil {
					tried = append(tried, err.Error())
					break
				}
				return l, a, nil
			}
		}
		if len(tried) == 0 || !strings.Contains(tried[len(tried)-1], w) {
			tried = append(tried, fmt.Sprintf("no interface named %q", w))
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("choosing the interface from -iface %s: %s", strings.Join(wanted, ","), strings.Join(tried, "; "))
}

func byRegex(links []netlink.Link, exprs []string, fam int) (netlink.Link, netip.Addr, error) {
	for _, expr := range exprs {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("-iface-regex %q: %w", expr, err)
		}
		for _, l := range links {
			addrs, _ := linkAddrs(l, fam)
			for _, a := range addrs {
				if re.MatchString(a.String()) {
					return l, a, nil
				}
			}
			if re.MatchString(l.Attrs().Name) {
				if a, err := firstAddr(l, fam); err == nil {
					return l, a, nil
				}
			}
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("no interface with an %s address matches -iface-regex %s", famName(fam), strings.Join(exprs, ","))
}

func byDefaultRoute(fam int) (netlink.Link, netip.Addr, error) {
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, netip.Addr{}, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		if src, ok := netip.AddrFromSlice(r.Src); ok && src.Unmap().Is4() == (fam == unix.AF_INET) && src.Unmap().IsGlobalUnicast() {
			return l, src.Unmap(), nil
		}
		a, err := firstAddr(l, fam)
		return l, a, err
	}
	return nil, netip.Addr{}, fmt.Errorf("no %s default route in this network namespace: choose the interface with -iface or -iface-regex", famName(fam))
}

func firstAddr(l netlink.Link, fam int) (netip.Addr, error) {
	addrs, err := linkAddrs(l, fam)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("interface %s has no global %s address", l.Attrs().Name, famName(fam))
	}
	return addrs[0], nil
}

// linkAddrs returns l's global addresses of the family. IPv6 addresses are
// taken as flanneld orders them (v0.28.9 pkg/ip/iface.go
// GetInterfaceIP6Addrs), but global ones only (a peer cannot reach a
// link-local address): not deprecated, not tentative (DAD pending),
// permanent before dynamic, non-temporary before temporary.
func linkAddrs(l netlink.Link, fam int) ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(l, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	type cand struct {
		a    netip.Addr
		rank int
	}
	var out []cand
	for _, a := range addrs {
		if a.IPNet == nil || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() != (fam == unix.AF_INET) || ip.IsLinkLocalUnicast() || !ip.IsGlobalUnicast() {
			continue
		}
		rank := 0
		if fam == unix.AF_INET6 {
			if a.Flags&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
				continue
			}
			if a.Flags&unix.IFA_F_PERMANENT == 0 {
				rank += 2
			}
			if a.Flags&unix.IFA_F_TEMPORARY != 0 {
				rank++
			}
		}
		out = append(out, cand{ip, rank})
	}
	slices.SortStableFunc(out, func(x, y cand) int { return cmp.Compare(x.rank, y.rank) })
	res := make([]netip.Addr, len(out))
	for i, c := range out {
		res[i] = c.a
	}
	return res, nil
}
