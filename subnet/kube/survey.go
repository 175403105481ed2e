package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/subnet"
)

// ErrNoPodCIDR is the reason a Node has no lease while it has no podCIDR.
var ErrNoPodCIDR = errors.New("the Node has no podCIDR")

// withPodCIDRs returns the network config of a node whose Node has the
// given podCIDRs: subnets are podCIDRs of the own lengths (the config the
// agent runs with). Errors name the node, and netConfPath when a podCIDR
// lies outside the network.
func withPodCIDRs(base *subnet.Config, name string, podCIDRs []string, netConfPath string) (*subnet.Config, error) {
	if len(podCIDRs) == 0 {
		return nil, fmt.Errorf("node %q: %w", name, ErrNoPodCIDR)
	}
	v4, v6, err := splitPodCIDRs(podCIDRs)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", name, err)
	}
	cfg := base
	if cfg.EnableIPv4 {
		if !v4.IsValid() {
			return nil, fmt.Errorf("node %q has no IPv4 podCIDR (%q), and the network config enables IPv4", name, podCIDRs)
		}
		if cfg, err = cfg.WithSubnetLen(v4); err != nil {
			return nil, fmt.Errorf("node %q: podCIDR %s is not inside Network %s of %s", name, v4, base.Network, netConfPath)
		}
	}
	if cfg.EnableIPv6 {
		// flanneld goes on without the v6 subnet and its backend fails
		// later; say what is missing instead.
		if !v6.IsValid() {
			return nil, fmt.Errorf("node %q has no IPv6 podCIDR (%q), and the network config enables IPv6 (give kube-controller-manager a dual-stack --cluster-cidr)", name, podCIDRs)
		}
		if cfg, err = cfg.WithIPv6SubnetLen(v6); err != nil {
			return nil, fmt.Errorf("node %q: podCIDR %s is not inside IPv6Network %s of %s", name, v6, base.IPv6Network, netConfPath)
		}
	}
	return cfg, nil
}

// Survey is one look at a Kubernetes-mode cluster from one node, for
// `weft doctor`: the own Node, and every flannel Node's lease checked as
// that node's agent checks its peers.
type Survey struct {
	// Config is net-conf.json's config with the own podCIDR lengths, as
	// the agent runs with it; net-conf.json's own (SubnetLen 0) when the
	// own Node gives no usable podCIDR (ConfigErr says why).
	Config *subnet.Config
	// OwnFound says whether the own Node exists; OwnPodCIDRs are its
	// podCIDRs, OwnMarked whether it carries kube-subnet-manager="true"
	// (an agent has annotated it).
	OwnFound    bool
	OwnPodCIDRs []string
	OwnMarked   bool
	// NodePublicIP and NodePublicIPv6 are the own Node's node-public-ip
	// and node-public-ipv6 annotations (an operator's), which win over
	// -public-ip in weftd; zero when absent or malformed (weftd then
	// ignores them too).
	NodePublicIP, NodePublicIPv6 netip.Addr
	// ConfigErr says why the own podCIDRs give no config: ErrNoPodCIDR, a
	// podCIDR outside the network, a family missing (nil when the Node is
	// missing).
	ConfigErr error
	// Own is the own Node's lease when it is valid; OwnErr says why peers
	// skip it (a malformed annotation), when the Node is marked.
	Own    *subnet.Lease
	OwnErr error
	// Leases are the valid leases of the flannel Nodes (the own included);
	// Invalid the Nodes peers skip, each with why.
	Leases  []NodeLease
	Invalid []NodeLease
	// Others counts the Nodes that are not flannel nodes.
	Others int
}

// Look reads every Node once and returns what node name sees: cfg is
// net-conf.json's config (ReadNetConf), validate the backends' data
// checks. Each flannel Node is validated with the own podCIDR lengths, as
// the own agent validates its peers (with the Node's own lengths while the
// own Node has no podCIDR).
func Look(ctx context.Context, api API, ann Annotations, name string, cfg *subnet.Config, validate func(*subnet.Config) subnet.DataValidator) (*Survey, error) {
	list, err := api.ListNodes(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	s := &Survey{Config: cfg}
	var flannel []*nodeInfo
	for i := range list.Items {
		n := toInfo(&list.Items[i], ann.Prefix, name)
		marked := n.annotations[ann.SubnetManager] == "true"
		if n.name == name {
			s.OwnFound, s.OwnPodCIDRs, s.OwnMarked = true, n.podCIDRs, marked
			if a, err := netip.ParseAddr(n.annotations[ann.NodePublicIP]); err == nil && a.Is4() {
				s.NodePublicIP = a
			}
			if a, err := netip.ParseAddr(n.annotations[ann.NodePublicIPv6]); err == nil && a.Is6() {
				s.NodePublicIPv6 = a
			}
		}
		if marked {
			flannel = append(flannel, n)
		} else {
			s.Others++
		}
	}
	ownCfg := cfg
	if s.OwnFound {
		c, err := withPodCIDRs(cfg, name, s.OwnPodCIDRs, "net-conf.json")
		if err != nil {
			s.ConfigErr = err
			ownCfg = nil
		} else {
			s.Config = c
			ownCfg = c
		}
	}
	for _, n := range flannel {
		c := ownCfg
		if c == nil {
			c = cfg
			if k, err := withPodCIDRs(cfg, n.name, n.podCIDRs, "net-conf.json"); err == nil {
				c = k
			}
		}
		var v subnet.DataValidator
		if validate != nil {
			v = validate(c)
		}
		nl := NodeLease{Node: n.name, Lease: ann.describe(n)}
		l, _, err := ann.nodeLease(c, n, v)
		if err != nil {
			nl.Invalid = strings.TrimPrefix(err.Error(), fmt.Sprintf("node %q: ", n.name))
			s.Invalid = append(s.Invalid, nl)
			if n.name == name {
				s.OwnErr = err
			}
			continue
		}
		nl.Lease = l
		s.Leases = append(s.Leases, nl)
		if n.name == name {
			own := l
			s.Own = &own
		}
	}
	byName := func(a, b NodeLease) int { return strings.Compare(a.Node, b.Node) }
	slices.SortFunc(s.Leases, byName)
	slices.SortFunc(s.Invalid, byName)
	return s, nil
}
