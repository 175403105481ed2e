package cniplugin

import (
	"encoding/json"
	"fmt"
)

// ConfList describes flannel's conflist, the network configuration a
// runtime reads from /etc/cni/net.d: the flannel plugin delegating to a
// bridge with hairpin mode and a default gateway, then portmap, as
// flannel's stock kube-flannel.yml and dist/cni/10-flannel.conflist have
// it. Every conflist Weft writes (the manifest's, the lab's, the tests')
// comes from here.
type ConfList struct {
	Name       string
	CNIVersion string
	// SubnetFile, DataDir and IPAMDataDir point the plugin and host-local
	// elsewhere than their defaults; empty leaves them out.
	SubnetFile, DataDir, IPAMDataDir string
	// NoPortmap leaves the portmap plugin out.
	NoPortmap bool
}

type confListJSON struct {
	Name       string `json:"name"`
	CNIVersion string `json:"cniVersion"`
	Plugins    []any  `json:"plugins"`
}

type flannelJSON struct {
	Type       string         `json:"type"`
	SubnetFile string         `json:"subnetFile,omitempty"`
	DataDir    string         `json:"dataDir,omitempty"`
	IPAM       map[string]any `json:"ipam,omitempty"`
	Delegate   map[string]any `json:"delegate"`
}

type portmapJSON struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

// Marshal encodes the conflist as a person would write it: indented by two
// spaces, with a final newline.
func (c ConfList) Marshal() ([]byte, error) {
	f := flannelJSON{
		Type:       "flannel",
		SubnetFile: c.SubnetFile,
		DataDir:    c.DataDir,
		Delegate:   map[string]any{"hairpinMode": true, "isDefaultGateway": true},
	}
	if c.IPAMDataDir != "" {
		f.IPAM = map[string]any{"dataDir": c.IPAMDataDir}
	}
	plugins := []any{f}
	if !c.NoPortmap {
		plugins = append(plugins, portmapJSON{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}})
	}
	b, err := json.MarshalIndent(confListJSON{Name: c.Name, CNIVersion: c.CNIVersion, Plugins: plugins}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the CNI conflist %q: %w", c.Name, err)
	}
	return append(b, '\n'), nil
}
