// Package nodeflags defines, once, the weftd flags that say where a node's
// overlay is: the external interface (-iface, -iface-regex, -public-ip,
// -public-ipv6),
// subnet.env (-subnet-file), the firewall switches (-ip-masq,
// -iptables-forward-rules) and the health server (-healthz-ip,
// -healthz-port). weftd and `weft doctor` both register them, so that the
// doctor run with weftd's command line looks where weftd works.
package nodeflags

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
)

// StringList is a repeatable string flag; a comma also separates values.
type StringList []string

func (s *StringList) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *StringList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*s = append(*s, f)
		}
	}
	return nil
}

// DefaultSubnetFile is flanneld's subnet.env path.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// Flags holds the values of the node flags, named as flanneld's.
type Flags struct {
	Ifaces       StringList
	IfaceRegexes StringList
	PublicIP     string
	PublicIPv6   string
	SubnetFile   string
	IPMasq       bool
	ForwardRules bool
	HealthzIP    string
	HealthzPort  int
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.Var(&f.Ifaces, "iface", "interface to use (IP or name) for inter-host communication; may be repeated, tried in order")
	fs.Var(&f.IfaceRegexes, "iface-regex", "regex matching the interface name or IP to use for inter-host communication; may be repeated")
	fs.StringVar(&f.PublicIP, "public-ip", "", "IP accessible by other nodes for inter-host communication (default: the interface's address)")
	fs.StringVar(&f.PublicIPv6, "public-ipv6", "", "IPv6 address accessible by other nodes for inter-host communication (default: the interface's global IPv6 address)")
	fs.StringVar(&f.SubnetFile, "subnet-file", DefaultSubnetFile, "filename where the env variables (subnet, MTU, ...) will be written to")
	fs.BoolVar(&f.IPMasq, "ip-masq", false, "set up IP masquerade rules for traffic leaving the overlay network")
	fs.BoolVar(&f.ForwardRules, "iptables-forward-rules", true, "add forward rules accepting traffic to and from the network (iptables FLANNEL-FWD, or the nftables forward chain)")
	fs.StringVar(&f.HealthzIP, "healthz-ip", "0.0.0.0", "the IP address for the healthz server to listen on")
	fs.IntVar(&f.HealthzPort, "healthz-port", 0, "the port for the healthz server to listen on (0 to disable)")
}

// Check says what is wrong with the values, naming the flag.
func (f *Flags) Check() error {
	if f.PublicIP != "" {
		a, err := netip.ParseAddr(f.PublicIP)
		if err != nil || !a.Is4() {
			return fmt.Errorf("-public-ip %q is not an IPv4 address", f.PublicIP)
		}
	}
	if f.PublicIPv6 != "" {
		a, err := netip.ParseAddr(f.PublicIPv6)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || !a.IsGlobalUnicast() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("-public-ipv6 %q is not a global unicast IPv6 address", f.PublicIPv6)
		}
	}
	if f.HealthzPort < 0 || f.HealthzPort > 65535 {
		return fmt.Errorf("-healthz-port %d is not a port number (0 disables the server)", f.HealthzPort)
	}
	if _, err := netip.ParseAddr(f.HealthzIP); err != nil {
		return fmt.Errorf("-healthz-ip %q is not an IP address", f.HealthzIP)
	}
	return nil
}

// Public returns -public-ip, or the zero Addr when it is not set (call
// after Check).
func (f *Flags) Public() netip.Addr {
	a, _ := netip.ParseAddr(f.PublicIP)
	return a
}

// PublicV6 returns -public-ipv6, or the zero Addr when it is not set (call
// after Check).
func (f *Flags) PublicV6() netip.Addr {
	a, _ := netip.ParseAddr(f.PublicIPv6)
	return a
}

// HealthzAddr returns the health server's listen address, or "" when
// -healthz-port is 0 (call after Check).
func (f *Flags) HealthzAddr() string {
	if f.HealthzPort == 0 {
		return ""
	}
	return netip.AddrPortFrom(netip.MustParseAddr(f.HealthzIP), uint16(f.HealthzPort)).String()
}

// HealthzURL returns the base URL a local client reaches the health server
// at ("http://127.0.0.1:8471" when it listens on every address), or "" when
// it is off.
func (f *Flags) HealthzURL() string {
	if f.HealthzPort == 0 {
		return ""
	}
	a := netip.MustParseAddr(f.HealthzIP)
	if a.IsUnspecified() {
		a = netip.MustParseAddr("127.0.0.1")
	}
	return "http://" + netip.AddrPortFrom(a, uint16(f.HealthzPort)).String()
}

// IsNodeFlag reports whether name is one of the flags Register defines.
func IsNodeFlag(name string) bool {
	switch name {
	case "iface", "iface-regex", "public-ip", "public-ipv6", "subnet-file", "ip-masq", "iptables-forward-rules", "healthz-ip", "healthz-port":
		return true
	}
	return false
}
