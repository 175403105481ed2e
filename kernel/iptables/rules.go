// Package iptables holds flanneld's masquerade and forward rules as data and
// keeps them in the kernel through github.com/coreos/go-iptables.
//
// The rules live in two chains of their own, each reached by one jump rule:
//
//	nat    POSTROUTING -> FLANNEL-POSTRTG  (with ip-masq)
//	filter FORWARD     -> FLANNEL-FWD      (with forward rules)
//
// A Manager reconciles: it lists the chains, compares them with the wanted
// rules and writes only when they differ (then it rewrites the whole chain,
// which also drops the rules of an old network). A resync that finds nothing
// changed costs a few `iptables -S` and no writes.
package iptables

import (
	"net/netip"
	"slices"
	"strings"
)

// Tables, chains and comments, as flanneld names them.
const (
	TableNAT     = "nat"
	TableFilter  = "filter"
	ChainPost    = "POSTROUTING"
	ChainForward = "FORWARD"
	ChainMasq    = "FLANNEL-POSTRTG"
	ChainFwd     = "FLANNEL-FWD"
	CommentMasq  = "flanneld masq"
	CommentFwd   = "flanneld forward"
	// KubeProxyMark is the mark kube-proxy sets on packets it masquerades
	// itself; flanneld returns early for them.
	KubeProxyMark = "0x4000/0x4000"
)

// Rule is one iptables rule: the table, the chain it is appended to and the
// rule specification, in the canonical order in which `iptables -S` prints
// it (so that a listing can be compared with it token by token).
type Rule struct {
	Table string
	Chain string
	Spec  []string
}

// String renders the rule as `iptables -S` would, prefixed by its table:
// `nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ...`.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Table)
	b.WriteString(" -A ")
	b.WriteString(r.Chain)
	for _, t := range r.Spec {
		b.WriteByte(' ')
		if strings.ContainsAny(t, " \t\"") {
			b.WriteString(`"` + strings.ReplaceAll(t, `"`, `\"`) + `"`)
		} else {
			b.WriteString(t)
		}
	}
	return b.String()
}

func (r Rule) equalSpec(spec []string) bool { return slices.Equal(r.Spec, spec) }

// Rules returns flanneld's rules for a cluster network and this node's
// subnet: masq for the FLANNEL-POSTRTG chain in nat and fwd for the
// FLANNEL-FWD chain in filter, in order. The kube-proxy mark returns first;
// pod-to-pod traffic (within the network, in either direction, and from
// outside into this node's subnet) returns before anything is masqueraded;
// traffic leaving the network (except multicast) and traffic entering it
// from outside is masqueraded with --random-fully. ownSubnet may be given as
// an address with its length (10.244.3.1/24, as in FLANNEL_SUBNET); it is
// masked. Both prefixes must be of one family; for IPv6 the multicast range
// is ff00::/8.
func Rules(network, ownSubnet netip.Prefix) (masq, fwd []Rule) {
	n := network.Masked().String()
	s := ownSubnet.Masked().String()
	mcast := "224.0.0.0/4"
	if network.Addr().Is6() {
		mcast = "ff00::/8"
	}
	// Each rule: its matches, the comment, then its target, the order in
	// which iptables prints them.
	rule := func(table, chain, comment string, match []string, target ...string) Rule {
		spec := append(append(append([]string{}, match...), "-m", "comment", "--comment", comment), target...)
		return Rule{Table: table, Chain: chain, Spec: spec}
	}
	m := func(match []string, target ...string) Rule {
		return rule(TableNAT, ChainMasq, CommentMasq, match, target...)
	}
	ret := []string{"-j", "RETURN"}
	masqTarget := []string{"-j", "MASQUERADE", "--random-fully"}
	masq = []Rule{
		m([]string{"-m", "mark", "--mark", KubeProxyMark}, ret...),
		m([]string{"-s", s, "-d", n}, ret...),
		m([]string{"-s", n, "-d", s}, ret...),
		m([]string{"!", "-s", n, "-d", s}, ret...),
		m([]string{"-s", n, "!", "-d", mcast}, masqTarget...),
		m([]string{"!", "-s", n, "-d", n}, masqTarget...),
	}
	fwd = []Rule{
		rule(TableFilter, ChainFwd, CommentFwd, []string{"-s", n}, "-j", "ACCEPT"),
		rule(TableFilter, ChainFwd, CommentFwd, []string{"-d", n}, "-j", "ACCEPT"),
	}
	return masq, fwd
}

// jumpRule is the rule in a built-in chain that sends packets to one of
// ours.
func jumpRule(table, parent, chain, comment string) Rule {
	return Rule{Table: table, Chain: parent, Spec: []string{"-m", "comment", "--comment", comment, "-j", chain}}
}

// splitRule splits one line of `iptables -S` output into its chain and
// rule specification; ok is false for lines that are not "-A CHAIN ...".
// Double-quoted words (comments) are unquoted.
func splitRule(line string) (chain string, spec []string, ok bool) {
	words := splitWords(line)
	if len(words) < 2 || words[0] != "-A" {
		return "", nil, false
	}
	return words[1], words[2:], true
}

func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
