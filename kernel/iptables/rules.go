// Package iptables holds flanneld's masquerade and forward rules as data and
// keeps them in the kernel through github.com/coreos/go-iptables.
//
// The rules live in two chains of their own, each reached by one jump rule:
//
//	nat    POSTROUTING -> FLANNEL-POSTRTG  (with ip-masq)
//	filter FORWARD     -> FLANNEL-FWD      (with forward rules)
//
// The rules themselves are the firewall package's policy, rendered here in
// iptables' syntax. A Firewall reconciles, in IPv4 (iptables) and IPv6
// (ip6tables): it lists the chains, compares them with the wanted rules and
// writes only when they differ (then it rewrites the whole chain, which also
// drops the rules of an old network). A resync that finds nothing changed
// costs a few `iptables -S` and no writes.
package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/firewall"
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
// subnet (firewall.MasqRules and firewall.ForwardRules in iptables' syntax):
// masq for the FLANNEL-POSTRTG chain in nat and fwd for the FLANNEL-FWD
// chain in filter, in order. Masquerading uses --random-fully. ownSubnet may
// be given as an address with its length (10.244.3.1/24, as in
// FLANNEL_SUBNET); it is masked. Both prefixes must be of one family.
func Rules(network, ownSubnet netip.Prefix) (masq, fwd []Rule) {
	n := firewall.Net{Network: network, Subnet: ownSubnet}
	for _, r := range firewall.MasqRules(n) {
		masq = append(masq, Rule{Table: TableNAT, Chain: ChainMasq, Spec: spec(r, CommentMasq)})
	}
	for _, r := range firewall.ForwardRules(n) {
		fwd = append(fwd, Rule{Table: TableFilter, Chain: ChainFwd, Spec: spec(r, CommentFwd)})
	}
	return masq, fwd
}

// spec renders a rule of the policy as iptables prints it: its matches,
// the comment, then its target.
func spec(r firewall.Rule, comment string) []string {
	var s []string
	if r.Mark != 0 {
		s = append(s, "-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", r.Mark, r.Mark))
	}
	addr := func(flag string, p netip.Prefix, not bool) {
		if !p.IsValid() {
			return
		}
		if not {
			s = append(s, "!")
		}
		s = append(s, flag, p.String())
	}
	addr("-s", r.Src, r.NotSrc)
	addr("-d", r.Dst, r.NotDst)
	s = append(s, "-m", "comment", "--comment", comment)
	switch r.Action {
	case firewall.Accept:
		s = append(s, "-j", "ACCEPT")
	case firewall.Masquerade:
		s = append(s, "-j", "MASQUERADE", "--random-fully")
	default:
		s = append(s, "-j", "RETURN")
	}
	return s
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
