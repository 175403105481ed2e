// Package subnet holds the control plane's pure types: the cluster network
// config stored at <prefix>/config, the leases stored under <prefix>/subnets,
// the arithmetic that enumerates a network's subnets, and the Manager seam that
// the agent uses to lease and watch them. Nothing here does I/O.
package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// DefaultBackendType is the backend used when the config names none. flannel's
// code defaults to "udp" while its documentation says vxlan; we follow the docs.
const DefaultBackendType = "vxlan"

// ErrInvalidConfig is wrapped by every error that ParseConfig returns for a
// config that is well-formed JSON but describes an unusable network.
var ErrInvalidConfig = errors.New("invalid network config")

// Config is the cluster network config, flannel's JSON at <prefix>/config,
// parsed, validated and with its defaults filled in.
type Config struct {
	EnableIPv4     bool
	EnableIPv6     bool
	EnableNFTables bool

	// Network is the IPv4 cluster network, e.g. 10.244.0.0/16.
	Network netip.Prefix
	// SubnetLen is the prefix length of each node's subnet.
	SubnetLen int
	// SubnetMin and SubnetMax bound the subnets that may be leased
	// (both inclusive; both are subnet base addresses).
	SubnetMin netip.Addr
	SubnetMax netip.Addr

	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr

	// BackendType is Backend.Type, defaulted to DefaultBackendType.
	BackendType string
	// Backend is the raw Backend object, handed to the backend to parse.
	Backend json.RawMessage
}

// rawConfig mirrors flannel's JSON. Pointers tell "absent" from "zero".
type rawConfig struct {
	EnableIPv4     *bool           `json:"EnableIPv4"`
	EnableIPv6     *bool           `json:"EnableIPv6"`
	EnableNFTables *bool           `json:"EnableNFTables"`
	Network        *string         `json:"Network"`
	SubnetMin      *string         `json:"SubnetMin"`
	SubnetMax      *string         `json:"SubnetMax"`
	SubnetLen      *int            `json:"SubnetLen"`
	IPv6Network    *string         `json:"IPv6Network"`
	IPv6SubnetMin  *string         `json:"IPv6SubnetMin"`
	IPv6SubnetMax  *string         `json:"IPv6SubnetMax"`
	IPv6SubnetLen  *int            `json:"IPv6SubnetLen"`
	Backend        json.RawMessage `json:"Backend"`
}

// knownFields lists the fields of rawConfig, to report unknown ones.
var knownFields = []string{
	"EnableIPv4", "EnableIPv6", "EnableNFTables", "Network", "SubnetMin", "SubnetMax",
	"SubnetLen", "IPv6Network", "IPv6SubnetMin", "IPv6SubnetMax", "IPv6SubnetLen", "Backend",
}

// ParseConfig parses and validates flannel's network config JSON and fills in
// its defaults. Unknown top-level fields are not an error (flanneld ignores
// them); their names are returned so that the caller can log them. Every error
// quotes the offending value and says what is allowed.
func ParseConfig(data []byte) (cfg *Config, unknown []string, err error) {
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrInvalidConfig, describeJSONError(err, data))
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidConfig)
	}
	unknown = unknownFields(data)

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
		return nil, unknown, err
	}
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, unknown, fmt.Errorf("%w: EnableIPv4 and EnableIPv6 are both false; enable at least one", ErrInvalidConfig)
	}
	// A family that is off is absent from the config (its fields stay
	// zero), so that everything downstream branches on one thing. Its
	// fields are still checked when given: a typo is reported now rather
	// than when the family is turned on.
	if cfg.EnableIPv4 || raw.Network != nil {
		if err := cfg.parseIPv4(&raw); err != nil {
			return nil, unknown, err
		}
	}
	if err := cfg.parseIPv6(&raw); err != nil {
		return nil, unknown, err
	}
	if !cfg.EnableIPv4 {
		cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax = netip.Prefix{}, 0, netip.Addr{}, netip.Addr{}
	}
	if !cfg.EnableIPv6 {
		cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax = netip.Prefix{}, 0, netip.Addr{}, netip.Addr{}
	}
	return cfg, unknown, nil
}

func (c *Config) parseBackend(raw json.RawMessage) error {
	c.BackendType = DefaultBackendType
	c.Backend = json.RawMessage(`{"Type":"vxlan"}`)
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	var b struct {
		Type *string `json:"Type"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("%w: Backend %s: %s (want an object such as {\"Type\":\"vxlan\"})", ErrInvalidConfig, quoteJSON(raw), describeJSONError(err, raw))
	}
	if b.Type != nil {
		if *b.Type == "" {
			return fmt.Errorf("%w: Backend.Type is empty; name a backend such as \"vxlan\" or \"host-gw\"", ErrInvalidConfig)
		}
		c.BackendType = strings.ToLower(*b.Type)
	}
	c.Backend = append(json.RawMessage(nil), raw...)
	return nil
}

func (c *Config) parseIPv4(raw *rawConfig) error {
	if raw.Network == nil {
		return fmt.Errorf("%w: Network is missing; give the cluster network as a CIDR, e.g. \"10.244.0.0/16\"", ErrInvalidConfig)
	}
	p, err := netip.ParsePrefix(*raw.Network)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("%w: Network %q is not an IPv4 CIDR such as \"10.244.0.0/16\"", ErrInvalidConfig, *raw.Network)
	}
	if p.Masked() != p {
		return fmt.Errorf("%w: Network %q has host bits set; did you mean %q?", ErrInvalidConfig, *raw.Network, p.Masked().String())
	}
	if p.Bits() > 28 {
		return fmt.Errorf("%w: Network %q is too small: it must be a /28 or larger", ErrInvalidConfig, *raw.Network)
	}
	c.Network = p

	switch {
	case raw.SubnetLen != nil:
		c.SubnetLen = *raw.SubnetLen
	case p.Bits() <= 22:
		c.SubnetLen = 24
	default:
		c.SubnetLen = p.Bits() + 2
	}
	// As flanneld (pkg/subnet/config.go, CheckNetworkConfig): at least
	// prefix+2, so that the network holds four subnets.
	if c.SubnetLen < p.Bits()+2 || c.SubnetLen > 30 {
		return fmt.Errorf("%w: SubnetLen %d is out of range for Network %s: it must be at least %d (four subnets) and at most 30", ErrInvalidConfig, c.SubnetLen, p, p.Bits()+2)
	}

	c.SubnetMin = SubnetAt(p, c.SubnetLen, 1).Addr()
	c.SubnetMax = lastSubnet(p, c.SubnetLen).Addr()
	if raw.SubnetMin != nil {
		a, err := c.parseBound("SubnetMin", *raw.SubnetMin, p, c.SubnetLen)
		if err != nil {
			return err
		}
		c.SubnetMin = a
	}
	if raw.SubnetMax != nil {
		a, err := c.parseBound("SubnetMax", *raw.SubnetMax, p, c.SubnetLen)
		if err != nil {
			return err
		}
		c.SubnetMax = a
	}
	if c.SubnetMax.Less(c.SubnetMin) {
		return fmt.Errorf("%w: SubnetMin %s is above SubnetMax %s", ErrInvalidConfig, c.SubnetMin, c.SubnetMax)
	}
	return nil
}

func (c *Config) parseBound(field, s string, network netip.Prefix, subnetLen int) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4() != network.Addr().Is4() || a.Zone() != "" {
		fam := "IPv4"
		if !network.Addr().Is4() {
			fam = "IPv6"
		}
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not an %s address", ErrInvalidConfig, field, s, fam)
	}
	if !network.Contains(a) {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is outside Network %s", ErrInvalidConfig, field, s, network)
	}
	if netip.PrefixFrom(a, subnetLen).Masked().Addr() != a {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not on a /%d subnet boundary (nearest below is %s)", ErrInvalidConfig, field, s, subnetLen, netip.PrefixFrom(a, subnetLen).Masked().Addr())
	}
	return a, nil
}

func (c *Config) parseIPv6(raw *rawConfig) error {
	if raw.IPv6Network == nil {
		if c.EnableIPv6 {
			return fmt.Errorf("%w: EnableIPv6 is true but IPv6Network is missing", ErrInvalidConfig)
		}
		return nil
	}
	p, err := netip.ParsePrefix(*raw.IPv6Network)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("%w: IPv6Network %q is not an IPv6 CIDR such as \"fd00:10:244::/56\"", ErrInvalidConfig, *raw.IPv6Network)
	}
	if p.Masked() != p {
		return fmt.Errorf("%w: IPv6Network %q has host bits set; did you mean %q?", ErrInvalidConfig, *raw.IPv6Network, p.Masked().String())
	}
	c.IPv6Network = p
	// flanneld's rules (pkg/subnet/config.go CheckNetworkConfig, v0.28.9):
	// by default /64 subnets in a network of /62 or larger, otherwise
	// prefix+2 (four subnets) up to a /124 network; an explicit length
	// must leave at least four subnets and at least four addresses each.
	switch {
	case raw.IPv6SubnetLen != nil:
		c.IPv6SubnetLen = *raw.IPv6SubnetLen
		if c.IPv6SubnetLen < p.Bits()+2 || c.IPv6SubnetLen > 126 {
			return fmt.Errorf("%w: IPv6SubnetLen %d is out of range for IPv6Network %s: it must be at least %d (four subnets) and at most 126", ErrInvalidConfig, c.IPv6SubnetLen, p, p.Bits()+2)
		}
	case p.Bits() <= 62:
		c.IPv6SubnetLen = 64
	case p.Bits() <= 124:
		c.IPv6SubnetLen = p.Bits() + 2
	default:
		return fmt.Errorf("%w: IPv6Network %q is too small: it must be a /124 or larger", ErrInvalidConfig, *raw.IPv6Network)
	}
	c.IPv6SubnetMin = SubnetAt(p, c.IPv6SubnetLen, 1).Addr()
	c.IPv6SubnetMax = lastSubnet(p, c.IPv6SubnetLen).Addr()
	if raw.IPv6SubnetMin != nil {
		a, err := c.parseBound("IPv6SubnetMin", *raw.IPv6SubnetMin, p, c.IPv6SubnetLen)
		if err != nil {
			return err
		}
		c.IPv6SubnetMin = a
	}
	if raw.IPv6SubnetMax != nil {
		a, err := c.parseBound("IPv6SubnetMax", *raw.IPv6SubnetMax, p, c.IPv6SubnetLen)
		if err != nil {
			return err
		}
		c.IPv6SubnetMax = a
	}
	if c.IPv6SubnetMax.Less(c.IPv6SubnetMin) {
		return fmt.Errorf("%w: IPv6SubnetMin %s is above IPv6SubnetMax %s", ErrInvalidConfig, c.IPv6SubnetMin, c.IPv6SubnetMax)
	}
	return nil
}

// Equal reports whether two configs describe the same network and backend.
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.EnableIPv4 == o.EnableIPv4 && c.EnableIPv6 == o.EnableIPv6 &&
		c.EnableNFTables == o.EnableNFTables && c.Network == o.Network &&
		c.SubnetLen == o.SubnetLen && c.SubnetMin == o.SubnetMin && c.SubnetMax == o.SubnetMax &&
		c.IPv6Network == o.IPv6Network && c.IPv6SubnetLen == o.IPv6SubnetLen &&
		c.IPv6SubnetMin == o.IPv6SubnetMin && c.IPv6SubnetMax == o.IPv6SubnetMax &&
		c.BackendType == o.BackendType && jsonEqual(c.Backend, o.Backend)
}

// Subnets returns the subnets that may be leased, from SubnetMin to SubnetMax.
func (c *Config) Subnets() SubnetRange {
	return SubnetRange{Network: c.Network, Len: c.SubnetLen, Min: c.SubnetMin, Max: c.SubnetMax}
}

// Contains reports whether p is a subnet this config could lease: inside
// Network, of SubnetLen, and on a subnet boundary. It does not check the
// [SubnetMin, SubnetMax] range: a lease outside it (an operator's reservation,
// or one made under an older config) is still a valid peer.
func (c *Config) Contains(p netip.Prefix) bool {
	return c.EnableIPv4 && p.IsValid() && p.Bits() == c.SubnetLen && p.Masked() == p && c.Network.Contains(p.Addr())
}

// IPv6Subnets returns the IPv6 subnets that may be leased, from
// IPv6SubnetMin to IPv6SubnetMax (empty when IPv6 is off).
func (c *Config) IPv6Subnets() SubnetRange {
	return SubnetRange{Network: c.IPv6Network, Len: c.IPv6SubnetLen, Min: c.IPv6SubnetMin, Max: c.IPv6SubnetMax}
}

// ContainsIPv6 is Contains for the IPv6 family: p is an IPv6SubnetLen
// subnet of IPv6Network on a subnet boundary. It is false when IPv6 is off.
func (c *Config) ContainsIPv6(p netip.Prefix) bool {
	return c.EnableIPv6 && p.IsValid() && p.Bits() == c.IPv6SubnetLen && p.Masked() == p && c.IPv6Network.Contains(p.Addr())
}

// canonicalJSON returns the form of a that jsonEqual compares, tagged by
// kind: its re-encoding when it parses ("j" + JSON), else its bytes ("r" +
// raw). jsonEqual(a, b) is canonicalJSON(a) == canonicalJSON(b).
func canonicalJSON(a json.RawMessage) []byte {
	var x any
	if json.Unmarshal(a, &x) != nil {
		return append([]byte("r"), a...)
	}
	j, _ := json.Marshal(x)
	return append([]byte("j"), j...)
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

func unknownFields(data []byte) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return nil
	}
	var out []string
	for k := range m {
		if !slices.Contains(knownFields, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// describeJSONError turns a json error into a sentence naming the field and
// the expected type where the decoder knows them.
func describeJSONError(err error, data []byte) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		if raw := rawField(data, te.Field); raw != nil {
			return fmt.Sprintf("field %s is %s, a JSON %s; want a %s", te.Field, raw, te.Value, jsonTypeName(te.Type.String()))
		}
		return fmt.Sprintf("field %s has a JSON %s, want a %s", te.Field, te.Value, jsonTypeName(te.Type.String()))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("not valid JSON at byte %d: %v (input %s)", se.Offset, se, quoteJSON(data))
	}
	return fmt.Sprintf("%v (input %s)", err, quoteJSON(data))
}

// rawField returns the raw JSON of the field at a dotted path of object
// keys ("Backend.Type"), or nil when it cannot be found.
func rawField(data []byte, path string) json.RawMessage {
	cur := json.RawMessage(data)
	for _, name := range strings.Split(path, ".") {
		var m map[string]json.RawMessage
		if json.Unmarshal(cur, &m) != nil {
			return nil
		}
		v, ok := m[name]
		if !ok {
			return nil
		}
		cur = v
	}
	const max = 100
	if len(cur) > max {
		return append(cur[:max:max], "..."...)
	}
	return cur
}

func jsonTypeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "string"
	case "int", "int64", "uint16", "uint32":
		return "number"
	case "bool":
		return "boolean (true or false)"
	}
	return goType
}

// quoteJSON quotes input for an error message, cut short when long.
func quoteJSON(b []byte) string {
	const max = 200
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
