package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
)

// RuleChecker says how the kernel's firewall differs from the rules the
// agent keeps for a network and the node's subnet: one line per finding,
// none when the rules are present and current. IPTablesChecker implements
// it over kernel/iptables' rule data; the firewall seam's Check
// (iptables or nftables) is meant to stand behind it.
type RuleChecker interface {
	Check(ctx context.Context, network, own netip.Prefix) ([]string, error)
	// ForwardChain returns the built-in FORWARD chain's policy and rules, as
	// `iptables -S FORWARD` prints them.
	ForwardChain(ctx context.Context) ([]string, error)
}

// TableChecker says how the kernel's nftables tables differ from a
// policy: one line per finding, none when they hold its rules.
// kernel/nftables' Firewall implements it.
type TableChecker interface {
	Check(ctx context.Context, p firewall.Policy) ([]string, error)
}

// IPTablesChecker checks the chains that kernel/iptables keeps
// (FLANNEL-POSTRTG with Masq, FLANNEL-FWD with Forward) through the same
// listing the Manager reconciles from; it writes nothing.
type IPTablesChecker struct {
	IPT           iptables.IPTables
	Masq, Forward bool
}

var _ RuleChecker = IPTablesChecker{}

// Check implements RuleChecker.
func (c IPTablesChecker) Check(_ context.Context, network, own netip.Prefix) ([]string, error) {
	masq, fwd := iptables.Rules(network, own)
	var out []string
	type set struct {
		on                            bool
		table, parent, chain, comment string
		want                          []iptables.Rule
	}
	for _, s := range []set{
		{c.Masq, iptables.TableNAT, iptables.ChainPost, iptables.ChainMasq, iptables.CommentMasq, masq},
		{c.Forward, iptables.TableFilter, iptables.ChainForward, iptables.ChainFwd, iptables.CommentFwd, fwd},
	} {
		if !s.on {
			continue
		}
		ok, err := c.IPT.ChainExists(s.table, s.chain)
		if err != nil {
			return nil, fmt.Errorf("checking chain %s/%s: %w", s.table, s.chain, err)
		}
		if !ok {
			out = append(out, fmt.Sprintf("chain %s/%s is missing", s.table, s.chain))
		} else {
			lines, err := c.IPT.List(s.table, s.chain)
			if err != nil {
				return nil, fmt.Errorf("listing chain %s/%s: %w", s.table, s.chain, err)
			}
			have := appended(lines, s.chain)
			var want []string
			for _, r := range s.want {
				want = append(want, strings.TrimPrefix(r.String(), r.Table+" "))
			}
			if !slices.Equal(have, want) {
				out = append(out, fmt.Sprintf("chain %s/%s is not current: has %d rules, want %d (%s)", s.table, s.chain, len(have), len(want), firewall.FirstDiff(have, want, nil)))
			}
		}
		lines, err := c.IPT.List(s.table, s.parent)
		if err != nil {
			return nil, fmt.Errorf("listing chain %s/%s: %w", s.table, s.parent, err)
		}
		jumps := 0
		for _, l := range appended(lines, s.parent) {
			if strings.HasSuffix(l, "-j "+s.chain) {
				jumps++
			}
		}
		switch {
		case jumps == 0:
			out = append(out, fmt.Sprintf("no jump from %s/%s to %s", s.table, s.parent, s.chain))
		case jumps > 1:
			out = append(out, fmt.Sprintf("%d jumps from %s/%s to %s, want 1", jumps, s.table, s.parent, s.chain))
		}
	}
	return out, nil
}

// ForwardChain implements RuleChecker.
func (c IPTablesChecker) ForwardChain(context.Context) ([]string, error) {
	return c.IPT.List(iptables.TableFilter, iptables.ChainForward)
}

// appended returns the "-A <chain> ..." lines of a listing.
func appended(lines []string, chain string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			out = append(out, l)
		}
	}
	return out
}

// IPTablesBackend is one iptables variant whose rules are counted.
type IPTablesBackend struct {
	Name string // "iptables-legacy"
	// Save returns the variant's rules as iptables-save prints them.
	Save func(ctx context.Context) (string, error)
}

// installedBackends returns iptables-legacy and iptables-nft where their
// save programs are installed.
func installedBackends() []IPTablesBackend {
	var out []IPTablesBackend
	for _, name := range []string{"iptables-legacy", "iptables-nft"} {
		prog, err := exec.LookPath(name + "-save")
		if err != nil {
			continue
		}
		out = append(out, IPTablesBackend{Name: name, Save: func(ctx context.Context) (string, error) {
			b, err := exec.CommandContext(ctx, prog).Output()
			if err != nil {
				return "", fmt.Errorf("%s: %w", prog, err)
			}
			return string(b), nil
		}})
	}
	return out
}

// checkFirewall checks the FORWARD path for the pod network, Weft's chains,
// and that only one iptables variant holds rules.
func (n *node) checkFirewall(ctx context.Context) []Result {
	fwd := Result{Check: "firewall forward"}
	chains := Result{Check: "firewall chains"}
	both := Result{Check: "firewall backends"}
	out := func() []Result { return []Result{fwd, chains, both} }

	backends := n.o.IPTablesBackends
	if backends == nil {
		backends = installedBackends()
	}
	var holding []string
	var counts []string
	for _, b := range backends {
		s, err := b.Save(ctx)
		if err != nil {
			counts = append(counts, b.Name+": "+err.Error())
			continue
		}
		c := strings.Count(s, "\n-A ")
		counts = append(counts, fmt.Sprintf("%s: %d rules", b.Name, c))
		if c > 0 {
			holding = append(holding, fmt.Sprintf("%s (%d rules)", b.Name, c))
		}
	}
	switch {
	case len(backends) == 0:
		both.Status, both.Verdict = Skipped, "neither iptables-legacy-save nor iptables-nft-save is installed"
	case len(holding) > 1:
		both.Status, both.Verdict = Problem, "rules in both "+strings.Join(holding, " and ")
		both.Cause = "the kernel runs both rule sets; tools that write one (kube-proxy, docker, weftd through `iptables`) do not see the other, and a DROP in one is not undone by an ACCEPT in the other"
		both.Fix = []string{"choose one variant for every tool on the node: update-alternatives --set iptables /usr/sbin/iptables-nft (or -legacy)",
			"then remove the other's rules (after checking what wrote them): iptables-legacy-save | head; iptables-legacy -F; iptables-legacy -t nat -F"}
		both.Details = counts
	default:
		both.Status, both.Verdict = OK, "rules in one iptables variant at most ("+strings.Join(counts, ", ")+")"
	}

	if n.o.Firewall == nil {
		fwd.Status, fwd.Verdict = Skipped, "no iptables"
		chains.Status, chains.Verdict = Skipped, "no iptables"
		return out()
	}
	if n.cfg == nil || n.own == nil {
		fwd.Status, fwd.Verdict = Unknown, "cannot check without the network config and the node's lease"
		chains.Status, chains.Verdict = Unknown, fwd.Verdict
		return out()
	}
	network := n.cfg.Network
	lines, err := n.o.Firewall.ForwardChain(ctx)
	if err != nil {
		fwd.Status, fwd.Verdict, fwd.Cause = Unknown, "cannot list the FORWARD chain", err.Error()
	} else {
		fwd = forwardVerdict(lines, network, n.o.ForwardRules)
	}

	if !n.o.IPMasq && !n.o.ForwardRules {
		chains.Status, chains.Verdict = Skipped, "weftd keeps no chains (-ip-masq and -iptables-forward-rules off)"
		return out()
	}
	if n.cfg.EnableNFTables {
		if n.o.NFTables == nil {
			chains.Status, chains.Verdict = Skipped, "nftables mode (EnableNFTables), and no nft command here"
			return out()
		}
		p := firewall.Policy{Masq: n.o.IPMasq, Forward: n.o.ForwardRules}
		if n.cfg.Network.IsValid() && n.own.Subnet.IsValid() {
			p.IPv4 = firewall.Net{Network: n.cfg.Network, Subnet: n.own.Subnet}
		}
		if n.cfg.IPv6Network.IsValid() && n.own.IPv6Subnet.IsValid() {
			p.IPv6 = firewall.Net{Network: n.cfg.IPv6Network, Subnet: n.own.IPv6Subnet}
		}
		found, err := n.o.NFTables.Check(ctx, p)
		chains = rulesVerdict(chains, found, err, "nftables tables",
			"the tables weftd keeps are missing or differ from the network and lease (an `nft flush ruleset`, a firewall reload, another tool)")
		return out()
	}
	found, err := n.o.Firewall.Check(ctx, network, n.own.Subnet)
	chains = rulesVerdict(chains, found, err, "chains",
		"the chains weftd keeps are missing or differ from the network and lease (a firewall reload, an iptables-restore, another tool)")
	return out()
}

// rulesVerdict fills the result of the check of Weft's own rules from the
// findings of a checker; what names them in the verdict ("chains").
func rulesVerdict(res Result, found []string, err error, what, cause string) Result {
	switch {
	case err != nil:
		res.Status, res.Verdict, res.Cause = Unknown, "cannot list Weft's "+what, err.Error()
	case len(found) == 0:
		res.Status, res.Verdict = OK, "Weft's "+what+" are present and current"
	default:
		res.Status, res.Verdict = Problem, found[0]
		res.Details = found
		res.Cause = cause
		res.Fix = []string{"weftd rewrites them within -iptables-resync seconds; if they stay, see its log (journalctl -u weftd)"}
	}
	return res
}

// forwardVerdict judges the FORWARD chain: with policy DROP, something must
// accept the pod network (Weft's FLANNEL-FWD jump or an ACCEPT rule).
func forwardVerdict(lines []string, network netip.Prefix, fwdRules bool) Result {
	res := Result{Check: "firewall forward"}
	policy := "ACCEPT"
	accepted := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "-P" {
			policy = f[2]
			continue
		}
		if strings.HasSuffix(l, "-j "+iptables.ChainFwd) {
			accepted = true
		}
		if strings.HasSuffix(l, "-j ACCEPT") && (slices.Contains(f, network.String()) || len(f) == 4) {
			accepted = true // -s/-d the network, or an unconditional accept
		}
	}
	switch {
	case policy == "ACCEPT":
		res.Status, res.Verdict = OK, "FORWARD policy ACCEPT"
	case accepted:
		res.Status, res.Verdict = OK, fmt.Sprintf("FORWARD policy %s, and the pod network %s is accepted", policy, network)
	default:
		res.Status = Problem
		res.Verdict = fmt.Sprintf("FORWARD policy %s and nothing accepts the pod network %s", policy, network)
		res.Cause = "pod traffic between nodes is forwarded and dropped by the FORWARD policy (Docker sets it to DROP); flanneld's forward rules accept it"
		if fwdRules {
			res.Fix = []string{"weftd puts back its jump to FLANNEL-FWD within -iptables-resync seconds; if it stays missing, see its log"}
		} else {
			res.Fix = []string{"run weftd with -iptables-forward-rules (the default), or:",
				"iptables -A FORWARD -s " + network.String() + " -j ACCEPT",
				"iptables -A FORWARD -d " + network.String() + " -j ACCEPT"}
		}
	}
	return res
}
