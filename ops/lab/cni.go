package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// cniNetName is the CNI network name of the lab's pods.
const cniNetName = "weft-lab"

// cniVersion is the CNI spec version the lab's network config declares.
const cniVersion = "1.0.0"

// hostCNI holds what a host needs to attach its pods: a conflist naming the
// host's own subnet.env and data dirs, so hosts share nothing under
// /var/lib/cni, and a libcni config with the host's own cache dir.
type hostCNI struct {
	host Host
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

// conflist returns the flannel conflist for host h.
func conflist(h Host) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": cniVersion,
		"name":       cniNetName,
		"plugins": []any{map[string]any{
			"type":       "flannel",
			"subnetFile": h.SubnetFile,
			"dataDir":    filepath.Join(h.DataDir, "flannel"),
			"ipam":       map[string]any{"dataDir": filepath.Join(h.DataDir, "ipam")},
			"delegate":   map[string]any{"hairpinMode": true, "isDefaultGateway": true},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the CNI config of %s: %w", h.Name, err)
	}
	return b, nil
}

// newHostCNI prepares CNI calls for host h with plugins from binDir.
func newHostCNI(h Host, binDir string) (*hostCNI, error) {
	b, err := conflist(h)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parsing the CNI config of %s: %w", h.Name, err)
	}
	return &hostCNI{
		host: h,
		list: list,
		cni:  libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(h.DataDir, "cache"), nil),
	}, nil
}

func (c *hostCNI) runtime(p Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.NS, NetNS: nsPath(p.NS), IfName: "eth0"}
}

// add attaches pod p, running the plugins inside the host's namespace, and
// returns the pod's addresses (IPv4, IPv6; a family the lab has not is
// zero).
func (c *hostCNI) add(ctx context.Context, p Pod) (v4, v6 netip.Prefix, err error) {
	var res *types100.Result
	err = inNS(c.host.NS, func() error {
		r, err := c.cni.AddNetworkList(ctx, c.list, c.runtime(p))
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return v4, v6, fmt.Errorf("CNI ADD of pod %s on %s: %w", p.Name, c.host.Name, err)
	}
	for _, ip := range res.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ip.Address.Mask.Size()
		if a.Unmap().Is4() && !v4.IsValid() {
			v4 = netip.PrefixFrom(a.Unmap(), ones)
		} else if !a.Unmap().Is4() && !v6.IsValid() {
			v6 = netip.PrefixFrom(a, ones)
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, fmt.Errorf("CNI ADD of pod %s on %s returned no address: %v", p.Name, c.host.Name, res.IPs)
	}
	return v4, v6, nil
}

// del detaches pod p; the plugins release its address even when the pod's
// namespace is already gone.
func (c *hostCNI) del(ctx context.Context, p Pod) error {
	err := inNS(c.host.NS, func() error { return c.cni.DelNetworkList(ctx, c.list, c.runtime(p)) })
	if err != nil {
		return fmt.Errorf("CNI DEL of pod %s on %s: %w", p.Name, c.host.Name, err)
	}
	return nil
}
