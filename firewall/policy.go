// Package firewall is the seam between the agent and the kernel's packet
// filter. It holds the node's masquerade and forward policy as data (one
// description per address family, rendered by each implementation in its
// own syntax), the small Firewall interface that the iptables and nftables
// implementations (kernel/iptables, kernel/nftables) satisfy, and the one
// loop that applies, checks and restores the rules every resync period.
// Nothing here touches the kernel.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Mode names an implementation of the seam.
type Mode string

// The two modes. flannel's network config chooses with EnableNFTables.
const (
	IPTables Mode = "iptables"
	NFTables Mode = "nftables"
)

// ModeFor returns the mode the network config's EnableNFTables asks for.
func ModeFor(enableNFTables bool) Mode {
	if enableNFTables {
		return NFTables
	}
	return IPTables
}

// Other returns the mode that is not m: the one whose rules a node
// switching to m removes.
func (m Mode) Other() Mode {
	if m == NFTables {
		return IPTables
	}
	return NFTables
}

// ErrNotInstalled is wrapped by the error an implementation's constructor
// returns when its command (iptables, nft) is not on this host. Then no rule
// of that mode can be there either, so there is nothing to remove.
var ErrNotInstalled = errors.New("not installed")

// Family is an address family.
type Family int

// The two families, in the order implementations visit them.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists both families.
var Families = []Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Net is one family's part of the policy: the cluster network and this
// node's subnet. A zero Net means the family is off.
type Net struct {
	// Network is the cluster network (FLANNEL_NETWORK, or
	// FLANNEL_IPV6_NETWORK).
	Network netip.Prefix
	// Subnet is this node's subnet; an address with its length
	// (10.244.3.1/24, as in subnet.env) is masked.
	Subnet netip.Prefix
}

// On reports whether the family is in use.
func (n Net) On() bool { return n.Network.IsValid() }

// Validate checks that the network and subnet are valid prefixes of the
// family f and that the subnet lies inside the network. A zero Net is valid.
func (n Net) Validate(f Family) error {
	if n == (Net{}) {
		return nil
	}
	if !n.Network.IsValid() {
		return fmt.Errorf("firewall policy: %s network %v is not a valid prefix", f, n.Network)
	}
	if !n.Subnet.IsValid() {
		return fmt.Errorf("firewall policy: %s subnet %v is not a valid prefix", f, n.Subnet)
	}
	for _, p := range []netip.Prefix{n.Network, n.Subnet} {
		if p.Addr().Is4() != (f == IPv4) || p.Addr().Is4In6() {
			return fmt.Errorf("firewall policy: %s is not an %s prefix", p, f)
		}
	}
	if n.Subnet.Bits() < n.Network.Bits() || !n.Network.Contains(n.Subnet.Addr()) {
		return fmt.Errorf("firewall policy: %s subnet %s is not inside network %s", f, n.Subnet, n.Network)
	}
	return nil
}

// Policy is the whole wanted state of a node's firewall rules.
type Policy struct {
	// Masq keeps the masquerade rules (flanneld's -ip-masq).
	Masq bool
	// Forward keeps the forward rules (-iptables-forward-rules).
	Forward bool
	// IPv4 and IPv6 are the families' networks; a zero one is off.
	IPv4, IPv6 Net
}

// Net returns the policy's part for family f.
func (p Policy) Net(f Family) Net {
	if f == IPv6 {
		return p.IPv6
	}
	return p.IPv4
}

// Wants reports whether family f gets any rule: the family is on and at
// least one of the rule sets is wanted. A family that wants nothing has
// every rule of Weft's removed.
func (p Policy) Wants(f Family) bool { return p.Net(f).On() && (p.Masq || p.Forward) }

// Validate checks both families.
func (p Policy) Validate() error {
	for _, f := range Families {
		if err := p.Net(f).Validate(f); err != nil {
			return err
		}
	}
	return nil
}

// Action is what a rule does with a packet it matches.
type Action int

// The actions the policy uses.
const (
	// Return leaves the chain: the packet is not masqueraded.
	Return Action = iota
	// Accept accepts a forwarded packet.
	Accept
	// Masquerade rewrites the source to the outgoing interface's address,
	// with fully random source ports.
	Masquerade
)

func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Masquerade:
		return "masquerade"
	default:
		return "return"
	}
}

// Rule is one rule of the policy, free of any implementation's syntax. Every
// match that is set must hold.
type Rule struct {
	// Mark, when not zero, matches packets whose mark has all these bits
	// set (mark & Mark == Mark).
	Mark uint32
	// Src matches the source address (the reverse with NotSrc).
	Src    netip.Prefix
	NotSrc bool
	// Dst matches the destination address (the reverse with NotDst).
	Dst    netip.Prefix
	NotDst bool
	Action Action
}

// String renders the rule for logs and tests, e.g.
// "src 10.244.0.0/16 dst != 224.0.0.0/4 masquerade".
func (r Rule) String() string {
	var w []string
	if r.Mark != 0 {
		w = append(w, fmt.Sprintf("mark & %#x == %#x", r.Mark, r.Mark))
	}
	addr := func(name string, p netip.Prefix, not bool) {
		if !p.IsValid() {
			return
		}
		if not {
			w = append(w, name, "!=", p.String())
		} else {
			w = append(w, name, p.String())
		}
	}
	addr("src", r.Src, r.NotSrc)
	addr("dst", r.Dst, r.NotDst)
	w = append(w, r.Action.String())
	return strings.Join(w, " ")
}

// KubeProxyMark is the mark bit kube-proxy sets on packets it masquerades
// itself; they return before any of ours.
const KubeProxyMark uint32 = 0x4000

// MasqRules returns the masquerade rules for one family, in order
// (flanneld's FLANNEL-POSTRTG):
//
//  1. packets kube-proxy marked return (it masquerades them itself);
//  2. from this node's pods to the network, and
//  3. from the network to this node's pods, return (pod to pod keeps its
//     source);
//  4. from outside the network to this node's pods returns (traffic coming
//     in through a node port keeps its source);
//  5. from the network to anywhere but multicast is masqueraded (pods
//     reaching the outside);
//  6. from outside the network into it is masqueraded (the host reaching
//     a remote pod).
func MasqRules(n Net) []Rule {
	net, sub := n.Network.Masked(), n.Subnet.Masked()
	mcast := netip.MustParsePrefix("224.0.0.0/4")
	if net.Addr().Is6() {
		mcast = netip.MustParsePrefix("ff00::/8")
	}
	return []Rule{
		{Mark: KubeProxyMark, Action: Return},
		{Src: sub, Dst: net, Action: Return},
		{Src: net, Dst: sub, Action: Return},
		{Src: net, NotSrc: true, Dst: sub, Action: Return},
		{Src: net, Dst: mcast, NotDst: true, Action: Masquerade},
		{Src: net, NotSrc: true, Dst: net, Action: Masquerade},
	}
}

// ForwardRules returns the forward rules for one family (flanneld's
// FLANNEL-FWD): traffic from and to the network is accepted.
func ForwardRules(n Net) []Rule {
	net := n.Network.Masked()
	return []Rule{
		{Src: net, Action: Accept},
		{Dst: net, Action: Accept},
	}
}

// FirstDiff names the first difference between the rules a chain lists
// (have) and the wanted ones, in order: "missing <rule>", "extra <rule>"
// or "has <rule>, want <rule>"; "" when they match. same compares two
// rules (nil: as strings).
func FirstDiff(have, want []string, same func(a, b string) bool) string {
	for i := range max(len(have), len(want)) {
		switch {
		case i >= len(have):
			return "missing " + want[i]
		case i >= len(want):
			return "extra " + have[i]
		case same == nil && have[i] != want[i], same != nil && !same(have[i], want[i]):
			return "has " + have[i] + ", want " + want[i]
		}
	}
	return ""
}
