// Package cniplugin is the logic of the `flannel` CNI meta-plugin: it reads
// the node's subnet.env, generates a delegate configuration (bridge +
// host-local by default) from it, caches that configuration per container
// and delegates ADD, DEL, CHECK, GC and STATUS to it. cmd/flannel only calls
// Main, which reads the call (dispatch.go) and runs the delegate
// (delegate.go) itself, following the CNI spec's exec protocol.
//
// The network configuration is flannel's:
//
//	{"name":"cbr0","cniVersion":"1.0.0","type":"flannel",
//	 "subnetFile":"/run/flannel/subnet.env", "dataDir":"/var/lib/cni/flannel",
//	 "delegate":{"hairpinMode":true,"isDefaultGateway":true},
//	 "ipam":{...base IPAM section...}}
//
// Every failure is a *types.Error with the CNI spec's code.
package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/subnet/subnetenv"
)

// Defaults for the net conf fields, as flannel's plugin has them.
const (
	DefaultSubnetFile = subnetenv.DefaultPath
	DefaultDataDir    = "/var/lib/cni/flannel"
	DefaultDelegate   = "bridge"
	DefaultIPAM       = "host-local"
)

// NetConf is the plugin's network configuration as the runtime passes it on
// stdin.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// SubnetFile is the subnet.env the agent writes.
	SubnetFile string `json:"subnetFile"`
	// DataDir holds one cached delegate config per container.
	DataDir string `json:"dataDir"`
	// Delegate is merged into the generated delegate config; it must not
	// hold "name" or "ipam".
	Delegate map[string]any `json:"delegate"`
	// IPAM is the base of the generated IPAM section.
	IPAM map[string]any `json:"ipam"`
	// RuntimeConfig is passed to the delegate.
	RuntimeConfig map[string]any `json:"runtimeConfig"`
	// PrevResult is passed to the delegate on CHECK.
	PrevResult map[string]any `json:"prevResult"`
	// ValidAttachments are the attachments GC must keep.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
	// LegacyAttachments is the spec's first, misspelt name for
	// ValidAttachments; it is used only when ValidAttachments is absent.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments"`
}

// ParseNetConf decodes and checks the plugin's configuration and fills in
// the defaults. A decode failure is code 6; a delegate with "name" or
// "ipam", or a delegate "type" that is not a string, is code 7.
func ParseNetConf(data []byte) (*NetConf, error) {
	n := &NetConf{}
	if err := json.Unmarshal(data, n); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("decoding the flannel network configuration: %v", err), "")
	}
	if n.SubnetFile == "" {
		n.SubnetFile = DefaultSubnetFile
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	for _, k := range []string{"name", "ipam"} {
		if _, ok := n.Delegate[k]; ok {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid flannel network configuration %q: the \"delegate\" section must not have a %q field (the network's name is used; put IPAM settings in the top-level \"ipam\" section)", n.Name, k), "")
		}
	}
	if t, ok := n.Delegate["type"]; ok {
		if s, isStr := t.(string); !isStr || s == "" {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid flannel network configuration %q: delegate \"type\" must be a plugin name, not %v", n.Name, t), "")
		}
	}
	if t, ok := n.IPAM["type"]; ok {
		if s, isStr := t.(string); !isStr || s == "" {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid flannel network configuration %q: ipam \"type\" must be a plugin name, not %v", n.Name, t), "")
		}
	}
	return n, nil
}

// readEnv reads the subnet file: missing is code 11 (try again later),
// unreadable code 5, invalid content code 7 (each message names the file).
func readEnv(path string) (*subnetenv.Env, error) {
	env, err := subnetenv.Read(path)
	switch {
	case err == nil:
		return env, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s does not exist: the weft agent (or flanneld) on this node has not written it yet; is it running?", path), "")
	case errors.Is(err, subnetenv.ErrInvalid):
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("%v (the file is truncated or corrupt; the weft agent on this node rewrites it when it starts)", err), "")
	default:
		return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
}

// DelegateConf generates the delegate plugin's configuration from the net
// conf and subnet.env, as flannel's plugin does: the delegate section, then
// name, cniVersion and runtimeConfig; type "bridge" unless named; ipMasq
// (!FLANNEL_IPMASQ), mtu (FLANNEL_MTU) and, for bridge, isGateway (true)
// unless the delegate section sets them; and an IPAM section built on the
// net conf's "ipam" (type host-local unless named) whose ranges are this
// node's subnets and whose routes reach every cluster network.
func DelegateConf(n *NetConf, env *subnetenv.Env) map[string]any {
	d := maps.Clone(n.Delegate)
	if d == nil {
		d = map[string]any{}
	}
	d["name"] = n.Name
	if n.CNIVersion != "" {
		d["cniVersion"] = n.CNIVersion
	}
	if n.RuntimeConfig != nil {
		d["runtimeConfig"] = n.RuntimeConfig
	}
	setDefault(d, "type", DefaultDelegate)
	setDefault(d, "ipMasq", !env.IPMasq)
	setDefault(d, "mtu", env.MTU)
	if d["type"] == "bridge" {
		setDefault(d, "isGateway", true)
	}
	d["ipam"] = delegateIPAM(n.IPAM, env)
	return d
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func delegateIPAM(base map[string]any, env *subnetenv.Env) map[string]any {
	ipam := maps.Clone(base)
	if ipam == nil {
		ipam = map[string]any{}
	}
	setDefault(ipam, "type", DefaultIPAM)
	var ranges []any
	for _, sn := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if sn.IsValid() {
			ranges = append(ranges, []any{map[string]any{"subnet": sn.Masked().String()}})
		}
	}
	ipam["ranges"] = ranges
	// Keep the base routes and add one to each cluster network that is not
	// there yet.
	var routes []any
	have := map[string]bool{}
	if rs, ok := ipam["routes"].([]any); ok {
		for _, r := range rs {
			routes = append(routes, r)
			if m, ok := r.(map[string]any); ok {
				if dst, ok := m["dst"].(string); ok {
					have[dst] = true
				}
			}
		}
	}
	for _, nw := range append(append([]netip.Prefix{}, env.Networks...), env.IPv6Networks...) {
		if dst := nw.Masked().String(); !have[dst] {
			routes = append(routes, map[string]any{"dst": dst})
			have[dst] = true
		}
	}
	ipam["routes"] = routes
	return ipam
}
