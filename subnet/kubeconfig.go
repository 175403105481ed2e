package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
)

// ParseKubeConfig parses net-conf.json as flanneld does in Kubernetes mode,
// where each node's subnet is its Node's podCIDR: SubnetLen, SubnetMin,
// SubnetMax and their IPv6 forms are not used (they are returned in ignored,
// for the caller to log), and no subnet-size rules apply. Unlike flanneld it
// validates what is used: Network must be an IPv4 CIDR when EnableIPv4 is
// set, and IPv6Network must be an IPv6 CIDR. The returned config's
// SubnetLen is 0 until the store knows the podCIDR length (WithSubnetLen).
func ParseKubeConfig(data []byte) (cfg *Config, unknown, ignored []string, err error) {
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s", ErrInvalidConfig, describeJSONError(err, data))
	}
	if dec.More() {
		return nil, nil, nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidConfig)
	}
	unknown = unknownFields(data)
	for name, set := range map[string]bool{
		"SubnetLen": raw.SubnetLen != nil, "SubnetMin": raw.SubnetMin != nil, "SubnetMax": raw.SubnetMax != nil,
		"IPv6SubnetLen": raw.IPv6SubnetLen != nil, "IPv6SubnetMin": raw.IPv6SubnetMin != nil, "IPv6SubnetMax": raw.IPv6SubnetMax != nil,
	} {
		if set {
			ignored = append(ignored, name)
		}
	}
	slices.Sort(ignored)

	cfg = &Config{EnableIPv4: true}
	if raw.EnableIPv4 != nil {
		cfg.EnableIPv4 = *raw.EnableIPv4
	}
	if raw.EnableIPv6 != nil {
		cfg.EnableIPv6 = *raw.EnableIPv6
	}
	if raw.EnableNFTables != nil {
		cfg.EnableNFTables = *raw.EnableNFTables
	}
	if err := cfg.parseBackend(raw.Backend); err != nil {
		return nil, unknown, ignored, err
	}
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, unknown, ignored, fmt.Errorf("%w: EnableIPv4 and EnableIPv6 are both false; enable at least one", ErrInvalidConfig)
	}
	if raw.Network != nil || cfg.EnableIPv4 {
		if raw.Network == nil {
			return nil, unknown, ignored, fmt.Errorf("%w: Network is missing; give the cluster network (kube-controller-manager's --cluster-cidr) as a CIDR, e.g. \"10.244.0.0/16\"", ErrInvalidConfig)
		}
		p, err := parseNetwork("Network", *raw.Network, true)
		if err != nil {
			return nil, unknown, ignored, err
		}
		cfg.Network = p
	}
	if raw.IPv6Network != nil || cfg.EnableIPv6 {
		if raw.IPv6Network == nil {
			return nil, unknown, ignored, fmt.Errorf("%w: EnableIPv6 is true but IPv6Network is missing", ErrInvalidConfig)
		}
		p, err := parseNetwork("IPv6Network", *raw.IPv6Network, false)
		if err != nil {
			return nil, unknown, ignored, err
		}
		cfg.IPv6Network = p
	}
	// The Kubernetes store leases IPv4 podCIDRs only for now: refuse
	// rather than ignore what it cannot do yet.
	if cfg.EnableIPv6 {
		return nil, unknown, ignored, fmt.Errorf("%w: EnableIPv6 is true, but this version of weft supports IPv4 only in Kubernetes mode; set EnableIPv6 to false", ErrInvalidConfig)
	}
	if !cfg.EnableIPv4 {
		return nil, unknown, ignored, fmt.Errorf("%w: EnableIPv4 is false, but this version of weft supports IPv4 only in Kubernetes mode", ErrInvalidConfig)
	}
	return cfg, unknown, ignored, nil
}

func parseNetwork(field, s string, v4 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if v4 && (err != nil || !p.Addr().Is4()) {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q is not an IPv4 CIDR such as \"10.244.0.0/16\"", ErrInvalidConfig, field, s)
	}
	if !v4 && (err != nil || !p.Addr().Is6() || p.Addr().Is4In6()) {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q is not an IPv6 CIDR such as \"fd00:10:244::/56\"", ErrInvalidConfig, field, s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q has host bits set; did you mean %q?", ErrInvalidConfig, field, s, p.Masked().String())
	}
	return p, nil
}

// WithSubnetLen returns a copy of a Kubernetes-mode config whose subnets
// are podCIDRs of the given length (the own node's): SubnetLen, SubnetMin
// and SubnetMax then describe the podCIDRs of the network, so that leases
// and backends check peers as in etcd mode. podCIDR must lie inside Network
// and be longer than it.
func (c *Config) WithSubnetLen(podCIDR netip.Prefix) (*Config, error) {
	if !podCIDR.IsValid() || !podCIDR.Addr().Is4() || podCIDR.Masked() != podCIDR ||
		podCIDR.Bits() <= c.Network.Bits() || !c.Network.Contains(podCIDR.Addr()) {
		return nil, fmt.Errorf("%w: Network %s does not contain podCIDR %s", ErrInvalidConfig, c.Network, podCIDR)
	}
	out := *c
	out.SubnetLen = podCIDR.Bits()
	out.SubnetMin = SubnetAt(c.Network, out.SubnetLen, 0).Addr()
	out.SubnetMax = lastSubnet(c.Network, out.SubnetLen).Addr()
	return &out, nil
}
