package agent

import (
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
	h, err := netlinkx.Open()
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	defer h.Close()
	links, err := hostLinks(h)
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	var ext backend.ExternalInterface
	switch {
	case len(o.Ifaces) > 0:
		ext, err = byNameOrAddr(links, o.Ifaces)
	case len(o.Regexes) > 0:
		ext, err = byRegex(links, o.Regexes)
	default:
		ext, err = byDefaultRoute(h, links)
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

// hostLink is a link with its global IPv4 addresses, in the kernel's order.
type hostLink struct {
	netlinkx.Link
	addrs []netip.Addr
}

// hostLinks lists the links with their global IPv4 addresses (scope
// universe, not link-local).
func hostLinks(h *netlinkx.Handle) ([]hostLink, error) {
	links, err := h.Links()
	if err != nil {
		return nil, err
	}
	addrs, err := h.AddrList(0)
	if err != nil {
		return nil, err
	}
	byLink := map[int][]netip.Addr{}
	for _, a := range addrs {
		if ip := a.Prefix.Addr(); a.Global && !ip.IsLinkLocalUnicast() {
			byLink[a.LinkIndex] = append(byLink[a.LinkIndex], ip)
		}
	}
	out := make([]hostLink, 0, len(links))
	for _, l := range links {
		out = append(out, hostLink{Link: l, addrs: byLink[l.Index]})
	}
	return out, nil
}

func byNameOrAddr(links []hostLink, wanted []string) (backend.ExternalInterface, error) {
	var tried []string
	for _, w := range wanted {
		if a, err := netip.ParseAddr(w); err == nil {
			for _, l := range links {
				if slices.Contains(l.addrs, a) {
					return external(l, a), nil
				}
			}
			tried = append(tried, fmt.Sprintf("no interface has address %s", a))
			continue
		}
		for _, l := range links {
			if l.Name == w {
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

func byRegex(links []hostLink, exprs []string) (backend.ExternalInterface, error) {
	for _, expr := range exprs {
		re, err := regexp.Compile(expr)
		if err != nil {
			return backend.ExternalInterface{}, fmt.Errorf("-iface-regex %q: %w", expr, err)
		}
		for _, l := range links {
			for _, a := range l.addrs {
				if re.MatchString(a.String()) {
					return external(l, a), nil
				}
			}
			if re.MatchString(l.Name) {
				if e, err := externalFirstAddr(l); err == nil {
					return e, nil
				}
			}
		}
	}
	return backend.ExternalInterface{}, fmt.Errorf("no interface with an IPv4 address matches -iface-regex %s", strings.Join(exprs, ","))
}

func byDefaultRoute(h *netlinkx.Handle, links []hostLink) (backend.ExternalInterface, error) {
	routes, err := h.DefaultRoutes()
	if err != nil {
		return backend.ExternalInterface{}, err
	}
	for _, r := range routes {
		i := slices.IndexFunc(links, func(l hostLink) bool { return l.Index == r.LinkIndex })
		if i < 0 {
			continue
		}
		if r.Src.Is4() {
			return external(links[i], r.Src), nil
		}
		return externalFirstAddr(links[i])
	}
	return backend.ExternalInterface{}, errors.New("no default route in this network namespace: choose the interface with -iface or -iface-regex")
}

func externalFirstAddr(l hostLink) (backend.ExternalInterface, error) {
	if len(l.addrs) == 0 {
		return backend.ExternalInterface{}, fmt.Errorf("interface %s has no global IPv4 address", l.Name)
	}
	return external(l, l.addrs[0]), nil
}

func external(l hostLink, a netip.Addr) backend.ExternalInterface {
	return backend.ExternalInterface{Name: l.Name, Index: l.Index, MTU: l.MTU, Addr: a}
}

// ChooseExternal finds the external interface in the current network
// namespace as the agent does at start (for `weft doctor`, which must look
// where the agent works).
func ChooseExternal(o IfaceOptions) (backend.ExternalInterface, error) { return chooseExternal(o) }
