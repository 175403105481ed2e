package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/weftnet/weft/subnet"
)

// DefaultAnnotationPrefix is flanneld's -kube-annotation-prefix default.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// prefixRE is what a normalised prefix must match (flanneld's rule).
var prefixRE = regexp.MustCompile(`^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// Annotations are the node annotation keys flanneld reads and writes, built
// from a -kube-annotation-prefix as flanneld normalises it.
type Annotations struct {
	SubnetManager       string // "<prefix>kube-subnet-manager": "true" on flannel nodes
	BackendType         string
	BackendData         string
	BackendV6Data       string
	PublicIP            string
	PublicIPv6          string
	PublicIPOverwrite   string // set by a person: the public-ip peers should use
	PublicIPv6Overwrite string
	NodePublicIP        string // set by a person: this node's public IP (chooses the interface)
	NodePublicIPv6      string
	// Prefix is the normalised prefix every key starts with.
	Prefix string
}

// NewAnnotations normalises prefix as flanneld does (no "/": append "/";
// a "/" not at the end: append "-" unless it ends in "-") and returns the
// keys. The error names the prefix and the rule it breaks.
func NewAnnotations(prefix string) (Annotations, error) {
	p := prefix
	switch n := strings.Count(p, "/"); {
	case n > 1:
		return Annotations{}, fmt.Errorf("-kube-annotation-prefix %q: at most one \"/\" is allowed", prefix)
	case n == 0:
		p += "/"
	case !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, "-"):
		p += "-"
	}
	if !prefixRE.MatchString(p) {
		return Annotations{}, fmt.Errorf("-kube-annotation-prefix %q: %q is not a DNS-style prefix such as \"flannel.alpha.coreos.com\" or \"example.com/net\" (lower case letters, digits, '-', '_' and dots)", prefix, p)
	}
	return Annotations{
		SubnetManager:       p + "kube-subnet-manager",
		BackendType:         p + "backend-type",
		BackendData:         p + "backend-data",
		BackendV6Data:       p + "backend-v6-data",
		PublicIP:            p + "public-ip",
		PublicIPv6:          p + "public-ipv6",
		PublicIPOverwrite:   p + "public-ip-overwrite",
		PublicIPv6Overwrite: p + "public-ipv6-overwrite",
		NodePublicIP:        p + "node-public-ip",
		NodePublicIPv6:      p + "node-public-ipv6",
		Prefix:              p,
	}, nil
}

// Desired returns the annotations this node writes for its lease attributes,
// with flanneld's rules (section 1.5 of COMPAT-WAVE2): backend-type and
// kube-subnet-manager always; backend-data and public-ip unless vxlan has
// no IPv4 data; the v6 pair when the node has a public IPv6 and v6 data.
// A public-ip-overwrite (public-ipv6-overwrite) already on the node replaces
// the advertised address.
func (a Annotations) Desired(attrs subnet.LeaseAttrs, current map[string]string) map[string]string {
	out := map[string]string{
		a.SubnetManager: "true",
		a.BackendType:   attrs.BackendType,
	}
	bd := rawOrNull(attrs.BackendData)
	v6bd := rawOrNull(attrs.BackendV6Data)
	typ := attrs.BackendType
	if typ != "vxlan" || bd != "null" {
		out[a.BackendData] = bd
		ip := "0.0.0.0"
		if attrs.PublicIP.IsValid() {
			ip = attrs.PublicIP.String()
		}
		if o := current[a.PublicIPOverwrite]; o != "" {
			ip = o
		}
		out[a.PublicIP] = ip
	}
	if attrs.PublicIPv6 != nil && ((typ != "vxlan" && typ != "wireguard") || v6bd != "null") {
		out[a.BackendV6Data] = v6bd
		ip := attrs.PublicIPv6.String()
		if o := current[a.PublicIPv6Overwrite]; o != "" {
			ip = o
		}
		out[a.PublicIPv6] = ip
	}
	return out
}

func rawOrNull(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}

// errNotPeer marks a node that is not a flannel/Weft node (no
// kube-subnet-manager="true"): skipped quietly, removed if it was a peer.
var errNotPeer = errors.New("not a flannel node")

// nodeLease turns a peer node's podCIDRs and annotations into a lease and
// validates it as the etcd store validates a lease. Errors name the node
// and the annotation.
func (a Annotations) nodeLease(cfg *subnet.Config, n *nodeInfo, validate subnet.DataValidator) (subnet.Lease, error) {
	if n.annotations[a.SubnetManager] != "true" {
		return subnet.Lease{}, errNotPeer
	}
	v4, v6, err := splitPodCIDRs(n.podCIDRs)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("node %q: %w", n.name, err)
	}
	l := subnet.Lease{IPv6Subnet: v6}
	l.Attrs.BackendType = n.annotations[a.BackendType]
	if cfg.EnableIPv4 {
		if !v4.IsValid() {
			return subnet.Lease{}, fmt.Errorf("node %q has no IPv4 podCIDR (spec.podCIDRs %q)", n.name, n.podCIDRs)
		}
		l.Subnet = v4
		s, ok := n.annotations[a.PublicIP]
		if !ok {
			return subnet.Lease{}, fmt.Errorf("node %q: annotation %s is missing", n.name, a.PublicIP)
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return subnet.Lease{}, fmt.Errorf("node %q: annotation %s=%q is not an IPv4 address", n.name, a.PublicIP, s)
		}
		l.Attrs.PublicIP = ip
		if d, ok := n.annotations[a.BackendData]; ok {
			if !json.Valid([]byte(d)) {
				return subnet.Lease{}, fmt.Errorf("node %q: annotation %s=%q is not valid JSON", n.name, a.BackendData, clip(d))
			}
			l.Attrs.BackendData = json.RawMessage(d)
		}
	}
	if cfg.EnableIPv6 {
		if !v6.IsValid() {
			return subnet.Lease{}, fmt.Errorf("node %q has no IPv6 podCIDR (spec.podCIDRs %q)", n.name, n.podCIDRs)
		}
		s := n.annotations[a.PublicIPv6]
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return subnet.Lease{}, fmt.Errorf("node %q: annotation %s=%q is not an IPv6 address", n.name, a.PublicIPv6, s)
		}
		l.Attrs.PublicIPv6 = &ip
		if d, ok := n.annotations[a.BackendV6Data]; ok {
			if !json.Valid([]byte(d)) {
				return subnet.Lease{}, fmt.Errorf("node %q: annotation %s=%q is not valid JSON", n.name, a.BackendV6Data, clip(d))
			}
			l.Attrs.BackendV6Data = json.RawMessage(d)
		}
	}
	if err := cfg.ValidateLease(&l, validate); err != nil {
		return subnet.Lease{}, fmt.Errorf("node %q: %w", n.name, err)
	}
	return l, nil
}

// splitPodCIDRs sorts a node's podCIDRs by family, as flanneld does; more
// than two, or two of one family, is an error.
func splitPodCIDRs(cidrs []string) (v4, v6 netip.Prefix, err error) {
	if len(cidrs) > 2 {
		return v4, v6, fmt.Errorf("podCIDRs %q: want one IPv4 and/or one IPv6 CIDR", cidrs)
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Masked() != p {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDR %q is not a CIDR", s)
		}
		if p.Addr().Is4() {
			if v4.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDRs %q: two IPv4 CIDRs", cidrs)
			}
			v4 = p
		} else {
			if v6.IsValid() {
				return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDRs %q: two IPv6 CIDRs", cidrs)
			}
			v6 = p
		}
	}
	return v4, v6, nil
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
