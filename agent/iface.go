package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
)

// IfaceOptions says how to choose the external interface, as flanneld's
// -iface, -iface-regex and -public-ip do.
type IfaceOptions struct {
	// Ifaces are interface names or addresses, tried in order.
	Ifaces []string
	// Regexes match interface names or addresses, tried in order after Ifaces.
	Regexes []string
	// PublicIP overrides the address advertised to peers.
	PublicIP netip.Addr
}

// chooseExternal finds the external interface in the current network
// namespace.
func chooseExternal(o IfaceOptions) (backend.ExternalInterface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return backend.ExternalInterface{}, fmt.Errorf("listing links: %w", err)
	}
	var ext backend.ExternalInterface
	switch {
	case len(o.Ifaces) > 0:
		ext, err = byNameOrAddr(links, o.Ifaces)
	case len(o.Regexes) > 0:
		ext, err = byRegex(links, o.Regexes)
	default:
		ext, err = byDefaultRoute()
	}
	if err != nil {
		return ext, err
	}
	ext.PublicIP = ext.Addr
	if o.PublicIP.IsValid() {
		ext.PublicIP = o.PublicIP
	}
	return ext, nil
}

func byNameOrAddr(links []netlink.Link, wanted []string) (backend.ExternalInterface, error) {
	var tried []string
	for _, w := range wanted {
		if a, err := netip.ParseAddr(w); err == nil {
			for _, l := range links {
				addrs, _ := linkAddrs(l)
				for _, la := range addrs {
					if la == a {
						return external(l, a), nil
					}
				}
			}
			tried = append(tried, fmt.Sprintf("no interface has address %s", a))
			continue
		}
		for _, l := range links {
			if l.Attrs().Name == w {
				e, err := externalFirstAddr(l)
				if err != nil {
					tried = append(tried, err.Error())
					break
				}
				return e, nil
			}
		}
		if len(tried) == 0 || !strings.Contains(tried[len(tried)-1], w) {
			tried = append(tried, fmt.Sprintf("no interface named %q", w))
		}
	}
	return backend.ExternalInterface{}, fmt.Errorf("choosing the interface from -iface %s: %s", strings.Join(wanted, ","), strings.Join(tried, "; "))
}

func byRegex(links []netlink.Link, exprs []string) (backend.ExternalInterface, error) {
	for _, expr := range exprs {
		re, err := regexp.Compile(expr)
		if err != nil {
			return backend.ExternalInterface{}, fmt.Errorf("-iface-regex %q: %w", expr, err)
		}
		for _, l := range links {
			addrs, _ := linkAddrs(l)
			for _, a := range addrs {
				if re.MatchString(a.String()) {
					return external(l, a), nil
				}
			}
			if re.MatchString(l.Attrs().Name) {
				if e, err := externalFirstAddr(l); err == nil {
					return e, nil
				}
			}
		}
	}
	return backend.ExternalInterface{}, fmt.Errorf("no interface with an IPv4 address matches -iface-regex %s", strings.Join(exprs, ","))
}

func byDefaultRoute() (backend.ExternalInterface, error) {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return backend.ExternalInterface{}, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		if src, ok := netip.AddrFromSlice(r.Src); ok && src.Unmap().Is4() {
			return external(l, src.Unmap()), nil
		}
		return externalFirstAddr(l)
	}
	return backend.ExternalInterface{}, errors.New("no default route in this network namespace: choose the interface with -iface or -iface-regex")
}

func externalFirstAddr(l netlink.Link) (backend.ExternalInterface, error) {
	addrs, err := linkAddrs(l)
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	if len(addrs) == 0 {
		return backend.ExternalInterface{}, fmt.Errorf("interface %s has no global IPv4 address", l.Attrs().Name)
	}
	return external(l, addrs[0]), nil
}

func external(l netlink.Link, a netip.Addr) backend.ExternalInterface {
	return backend.ExternalInterface{Name: l.Attrs().Name, Index: l.Attrs().Index, MTU: l.Attrs().MTU, Addr: a}
}

// linkAddrs returns l's global IPv4 addresses.
func linkAddrs(l netlink.Link) ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if a.IPNet == nil || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().Is4() && !ip.IsLinkLocalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// ChooseExternal finds the external interface in the current network
// namespace as the agent does at start (for `weft doctor`, which must look
// where the agent works).
func ChooseExternal(o IfaceOptions) (backend.ExternalInterface, error) { return chooseExternal(o) }
