// Package subnetenv reads and writes subnet.env, the file through which the
// agent tells the CNI plugin about this node's lease:
//
//	FLANNEL_NETWORK=10.244.0.0/16
//	FLANNEL_SUBNET=10.244.52.1/24
//	FLANNEL_MTU=1450
//	FLANNEL_IPMASQ=true
//
// It imports nothing heavy, so that the CNI plugin stays small and fast.
package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/weftnet/weft/internal/atomicfile"
)

// DefaultPath is where flanneld and weftd write subnet.env.
const DefaultPath = "/run/flannel/subnet.env"

// ErrInvalid is wrapped by every error about a subnet.env that is present
// but unusable.
var ErrInvalid = errors.New("invalid subnet.env")

// Env is the content of subnet.env.
type Env struct {
	// Networks is FLANNEL_NETWORK (a comma list).
	Networks []netip.Prefix
	// Subnet is FLANNEL_SUBNET: the node's first usable address with the
	// subnet's length, e.g. 10.244.52.1/24.
	Subnet netip.Prefix
	// IPv6Networks and IPv6Subnet are the dual-stack equivalents.
	IPv6Networks []netip.Prefix
	IPv6Subnet   netip.Prefix
	MTU          int
	IPMasq       bool
}

// Marshal renders the file, one KEY=value a line, in flanneld's order.
func (e *Env) Marshal() []byte {
	var b bytes.Buffer
	if len(e.Networks) > 0 {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", joinPrefixes(e.Networks))
	}
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", e.Subnet)
	}
	if len(e.IPv6Networks) > 0 {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", joinPrefixes(e.IPv6Networks))
	}
	if e.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.Bytes()
}

// Write atomically replaces path with the rendered env (mode 0644) and
// syncs it to disk.
func Write(path string, e *Env) error {
	sync, err := WriteVisible(path, e)
	if err != nil {
		return err
	}
	return sync()
}

// WriteVisible is Write that returns as soon as the new file is in place,
// before it is synced (atomicfile.WriteVisibleFirst): the CNI plugin waits
// for it, the agent writes it again at every start, and neither need wait
// for the disk. sync syncs it and must be called once.
func WriteVisible(path string, e *Env) (sync func() error, err error) {
	return atomicfile.WriteVisibleFirst(path, e.Marshal(), 0o644)
}

// Read reads and parses path. A missing file gives an error that satisfies
// errors.Is(err, fs.ErrNotExist).
func Read(path string) (*Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	e, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Parse parses subnet.env content. It requires at least one network (v4 or
// v6), the matching subnet, FLANNEL_MTU and FLANNEL_IPMASQ; unknown keys,
// comments and blank lines are ignored.
func Parse(data []byte) (*Env, error) {
	e := &Env{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d %q is not KEY=value", ErrInvalid, line, s)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"'`)
		var err error
		switch k {
		case "FLANNEL_NETWORK":
			e.Networks, err = parsePrefixes(k, v)
		case "FLANNEL_SUBNET":
			e.Subnet, err = parsePrefix(k, v)
		case "FLANNEL_IPV6_NETWORK":
			e.IPv6Networks, err = parsePrefixes(k, v)
		case "FLANNEL_IPV6_SUBNET":
			e.IPv6Subnet, err = parsePrefix(k, v)
		case "FLANNEL_MTU":
			e.MTU, err = strconv.Atoi(v)
			if err != nil || e.MTU < 68 || e.MTU > 65535 {
				err = fmt.Errorf("%w: FLANNEL_MTU=%q is not an MTU between 68 and 65535", ErrInvalid, v)
			}
		case "FLANNEL_IPMASQ":
			e.IPMasq, err = strconv.ParseBool(v)
			if err != nil {
				err = fmt.Errorf("%w: FLANNEL_IPMASQ=%q is not true or false", ErrInvalid, v)
			}
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		seen[k] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !seen["FLANNEL_NETWORK"] && !seen["FLANNEL_IPV6_NETWORK"] {
		return nil, fmt.Errorf("%w: neither FLANNEL_NETWORK nor FLANNEL_IPV6_NETWORK is set", ErrInvalid)
	}
	if seen["FLANNEL_NETWORK"] && !seen["FLANNEL_SUBNET"] {
		return nil, fmt.Errorf("%w: FLANNEL_NETWORK is set but FLANNEL_SUBNET is missing", ErrInvalid)
	}
	if seen["FLANNEL_IPV6_NETWORK"] && !seen["FLANNEL_IPV6_SUBNET"] {
		return nil, fmt.Errorf("%w: FLANNEL_IPV6_NETWORK is set but FLANNEL_IPV6_SUBNET is missing", ErrInvalid)
	}
	for _, k := range []string{"FLANNEL_MTU", "FLANNEL_IPMASQ"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: %s is missing", ErrInvalid, k)
		}
	}
	return e, nil
}

func parsePrefix(k, v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %s=%q is not a CIDR such as 10.244.3.1/24", ErrInvalid, k, v)
	}
	return p, nil
}

func parsePrefixes(k, v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		p, err := parsePrefix(k, strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
