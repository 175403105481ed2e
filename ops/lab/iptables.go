package lab

import (
	"fmt"
	"os"
	"strings"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
)

// forwardRule is the rule that lets bridged underlay traffic through the
// root namespace's FORWARD chain when br_netfilter hands bridged frames to
// iptables (a host with a DROP policy would otherwise cut the hosts apart).
func forwardRule(n Names) Rule {
	return Rule{Table: "filter", Chain: "FORWARD", Spec: []string{
		"-i", n.Bridge(), "-o", n.Bridge(), "-m", "comment", "--comment", n.RuleComment(), "-j", "ACCEPT",
	}}
}

// bridgeNetfilter reports whether bridged IPv4 traffic passes iptables.
func bridgeNetfilter() bool {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// insertRule inserts r at the top of its chain unless it is there already.
func insertRule(r Rule) error {
	ipt, err := iptables.New(firewall.IPv4)
	if err != nil {
		return err
	}
	return iptables.InsertFirst(ipt, r.kernel())
}

// deleteRule deletes every copy of r; a missing rule is not an error.
func deleteRule(r Rule) error {
	ipt, err := iptables.New(firewall.IPv4)
	if err != nil {
		return err
	}
	return iptables.DeleteEvery(ipt, r.kernel())
}

// kernel converts r for the iptables seam.
func (r Rule) kernel() iptables.Rule {
	return iptables.Rule{Table: r.Table, Chain: r.Chain, Spec: r.Spec}
}

// labRules lists the rules in the root namespace's filter FORWARD chain
// that carry the lab's comment, as specs ready for deleteRule.
func labRules(n Names) ([]Rule, error) {
	ipt, err := iptables.New(firewall.IPv4)
	if err != nil {
		return nil, err
	}
	lines, err := ipt.List("filter", "FORWARD")
	if err != nil {
		return nil, fmt.Errorf("listing iptables filter FORWARD: %w", err)
	}
	return parseLabRules(lines, n), nil
}

// parseLabRules picks the "-A FORWARD ..." lines carrying the lab's comment.
func parseLabRules(lines []string, n Names) []Rule {
	var rules []Rule
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "-A" {
			continue
		}
		for i := range f {
			f[i] = strings.Trim(f[i], `"`)
		}
		spec := f[2:]
		for i := 0; i+1 < len(spec); i++ {
			if spec[i] == "--comment" && spec[i+1] == n.RuleComment() {
				rules = append(rules, Rule{Table: "filter", Chain: f[1], Spec: spec})
				break
			}
		}
	}
	return rules
}
