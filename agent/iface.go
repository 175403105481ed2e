package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
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
	h, err := netlinkx.Open()
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	defer h.Close()
	links, err := hostLinks(h)
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	six := !v4 // the family that chooses the interface
	var l hostLink
	var a netip.Addr
	switch {
	case len(o.Ifaces) > 0:
		l, a, err = byNameOrAddr(links, o.Ifaces, six)
	case len(o.Regexes) > 0:
		l, a, err = byRegex(links, o.Regexes, six)
	case six && o.PublicIPv6.IsValid():
		// flanneld's lookup key when no -iface is given: the interface
		// holding -public-ipv6, else the default route's.
		if l, a, err = byNameOrAddr(links, []string{o.PublicIPv6.String()}, six); err != nil {
			l, a, err = byDefaultRoute(h, links, six)
		}
	default:
		l, a, err = byDefaultRoute(h, links, six)
	}
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	ext := backend.ExternalInterface{Name: l.Name, Index: l.Index, MTU: l.MTU}
	if v4 {
		ext.Addr, ext.PublicIP = a, a
		if o.PublicIP.IsValid() {
			ext.PublicIP = o.PublicIP
		}
	}
	if v6 {
		if six {
			ext.Addr6 = a
		} else if ext.Addr6, err = v6AddrOf(l, o.PublicIPv6); err != nil {
			return backend.ExternalInterface{}, err
		}
		if v4 && len(o.Ifaces) == 0 && len(o.Regexes) == 0 {
			if r6, _, err := byDefaultRoute(h, links, true); err == nil && r6.Index != l.Index {
				return backend.ExternalInterface{}, fmt.Errorf("the IPv6 default route is on %s, the IPv4 one on %s: in dual-stack both must use one interface (choose it with -iface)", r6.Name, l.Name)
			}
		}
		ext.PublicIPv6 = ext.Addr6
		if o.PublicIPv6.IsValid() {
			ext.PublicIPv6 = o.PublicIPv6
		}
	}
	return ext, nil
}

// hostLink is a link with its global addresses of each family, IPv4 in the
// kernel's order, IPv6 as flanneld ranks them (v0.28.9 pkg/ip/iface.go
// GetInterfaceIP6Addrs), but global ones only (a peer cannot reach a
// link-local address): none deprecated or tentative, permanent before
// dynamic, non-temporary before temporary.
type hostLink struct {
	netlinkx.Link
	addrs, addrs6 []netip.Addr
}

// hostLinks lists the links with their global addresses (scope universe,
// not link-local).
func hostLinks(h *netlinkx.Handle) ([]hostLink, error) {
	links, err := h.Links()
	if err != nil {
		return nil, err
	}
	addrs, err := h.AddrList(0)
	if err != nil {
		return nil, err
	}
	addrs6, err := h.AddrList6(0)
	if err != nil {
		return nil, err
	}
	byLink := map[int][]netip.Addr{}
	for _, a := range addrs {
		if ip := a.Prefix.Addr(); a.Global && !ip.IsLinkLocalUnicast() {
			byLink[a.LinkIndex] = append(byLink[a.LinkIndex], ip)
		}
	}
	rank := func(a netlinkx.Addr) int {
		r := 0
		if a.Dynamic {
			r += 2
		}
		if a.Temporary {
			r++
		}
		return r
	}
	slices.SortStableFunc(addrs6, func(x, y netlinkx.Addr) int { return cmp.Compare(rank(x), rank(y)) })
	byLink6 := map[int][]netip.Addr{}
	for _, a := range addrs6 {
		if ip := a.Prefix.Addr(); a.Global && !a.Unusable && ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() {
			byLink6[a.LinkIndex] = append(byLink6[a.LinkIndex], ip)
		}
	}
	out := make([]hostLink, 0, len(links))
	for _, l := range links {
		out = append(out, hostLink{Link: l, addrs: byLink[l.Index], addrs6: byLink6[l.Index]})
	}
	return out, nil
}

func (l hostLink) family(six bool) []netip.Addr {
	if six {
		return l.addrs6
	}
	return l.addrs
}

func famName(six bool) string {
	if six {
		return "IPv6"
	}
	return "IPv4"
}

// v6AddrOf returns the IPv6 address of l that the IPv6 tunnel uses: pub
// when l has it, else the first of its global addresses.
func v6AddrOf(l hostLink, pub netip.Addr) (netip.Addr, error) {
	if len(l.addrs6) == 0 {
		return netip.Addr{}, fmt.Errorf("interface %s has no global IPv6 address, and IPv6 is on in the network config", l.Name)
	}
	if slices.Contains(l.addrs6, pub) {
		return pub, nil
	}
	return l.addrs6[0], nil
}

func firstAddr(l hostLink, six bool) (netip.Addr, error) {
	as := l.family(six)
	if len(as) == 0 {
		return netip.Addr{}, fmt.Errorf("interface %s has no global %s address", l.Name, famName(six))
	}
	return as[0], nil
}

func byNameOrAddr(links []hostLink, wanted []string, six bool) (hostLink, netip.Addr, error) {
	var tried []string
	for _, w := range wanted {
		if a, err := netip.ParseAddr(w); err == nil {
			found := false
			for _, l := range links {
				if slices.Contains(l.family(six), a) {
					return l, a, nil
				}
				if slices.Contains(l.family(!six), a) {
					// An address of the other family names the interface.
					found = true
					first, err := firstAddr(l, six)
					if err != nil {
						tried = append(tried, fmt.Sprintf("%s is on %s, which has no global %s address", a, l.Name, famName(six)))
						break
					}
					return l, first, nil
				}
			}
			if !found {
				tried = append(tried, fmt.Sprintf("no interface has address %s", a))
			}
			continue
		}
		for _, l := range links {
			if l.Name == w {
				a, err := firstAddr(l, six)
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
	return hostLink{}, netip.Addr{}, fmt.Errorf("choosing the interface from -iface %s: %s", strings.Join(wanted, ","), strings.Join(tried, "; "))
}

func byRegex(links []hostLink, exprs []string, six bool) (hostLink, netip.Addr, error) {
	for _, expr := range exprs {
		re, err := regexp.Compile(expr)
		if err != nil {
			return hostLink{}, netip.Addr{}, fmt.Errorf("-iface-regex %q: %w", expr, err)
		}
		for _, l := range links {
			for _, a := range l.family(six) {
				if re.MatchString(a.String()) {
					return l, a, nil
				}
			}
			if re.MatchString(l.Name) {
				if a, err := firstAddr(l, six); err == nil {
					return l, a, nil
				}
			}
		}
	}
	return hostLink{}, netip.Addr{}, fmt.Errorf("no interface with an %s address matches -iface-regex %s", famName(six), strings.Join(exprs, ","))
}

func byDefaultRoute(h *netlinkx.Handle, links []hostLink, six bool) (hostLink, netip.Addr, error) {
	list := h.DefaultRoutes
	if six {
		list = h.DefaultRoutes6
	}
	routes, err := list()
	if err != nil {
		return hostLink{}, netip.Addr{}, err
	}
	for _, r := range routes {
		i := slices.IndexFunc(links, func(l hostLink) bool { return l.Index == r.LinkIndex })
		if i < 0 {
			continue
		}
		if r.Src.IsValid() && r.Src.Is4() != six && r.Src.IsGlobalUnicast() {
			return links[i], r.Src, nil
		}
		a, err := firstAddr(links[i], six)
		return links[i], a, err
	}
	return hostLink{}, netip.Addr{}, fmt.Errorf("no %s default route in this network namespace: choose the interface with -iface or -iface-regex", famName(six))
}

// ChooseExternal finds the external interface in the current network
// namespace as the agent does at start in an IPv4 network (for `weft
// doctor`, which must look where the agent works; see ChooseExternalFor).
func ChooseExternal(o IfaceOptions) (backend.ExternalInterface, error) {
	return chooseExternal(o, true, false)
}

// ChooseExternalFor is ChooseExternal for a network with the given families
// on (the network config's EnableIPv4 and EnableIPv6): the interface and
// its address of each family, as the agent chooses them.
func ChooseExternalFor(o IfaceOptions, v4, v6 bool) (backend.ExternalInterface, error) {
	return chooseExternal(o, v4, v6)
}
