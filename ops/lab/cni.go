package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/cniplugin"
)

// cniNetName is the CNI network name of the lab's pods.
const cniNetName = "weft-lab"

// cniVersion is the CNI spec version the lab's network config declares.
const cniVersion = "1.0.0"

// RuntimeConfList is the file, in <host dir>/net.d, holding the conflist
// for a container runtime (podman, cnitool) run on a lab host.
const RuntimeConfList = "10-weft-lab.conflist"

// Plugin data directories under a host's directory: the lab's own pods'
// cache, and the cache of a runtime using RuntimeConfList. The plugin's GC
// deletes every attachment of the network in its data directory that the
// calling runtime does not list, so two runtimes must not share one; both
// share the host-local store (<host dir>/ipam), since their pods take
// addresses from one FLANNEL_SUBNET on one bridge.
const (
	labPluginDir     = "flannel"
	runtimePluginDir = "flannel-runtime"
)

// hostCNI holds what a host needs to attach its pods: a conflist naming the
// host's own subnet.env and data dirs, so hosts share nothing under
// /var/lib/cni, and a libcni config with the host's own cache dir.
type hostCNI struct {
	host Host
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

// ConfList returns the conflist of the lab's own pods on host h (see
// conflist), as labbench attaches them.
func ConfList(h Host) ([]byte, error) { return conflist(h, labPluginDir) }

// conflist returns the flannel conflist (the stock one without portmap) for
// host h, naming its own subnet.env and data dirs, whose plugin cache is
// <host dir>/<pluginDir>. Its cniVersion, 1.0.0, keeps GC (CNI 1.1) off:
// host-local's GC would release the addresses of every pod the caller
// does not list, the other runtime's included.
func conflist(h Host, pluginDir string) ([]byte, error) {
	return cniplugin.ConfList{
		Name:        cniNetName,
		CNIVersion:  cniVersion,
		SubnetFile:  h.SubnetFile,
		DataDir:     filepath.Join(h.DataDir, pluginDir),
		IPAMDataDir: filepath.Join(h.DataDir, "ipam"),
		NoPortmap:   true,
	}.Marshal()
}

// newHostCNI prepares CNI calls for host h with plugins from binDir.
func newHostCNI(h Host, binDir string) (*hostCNI, error) {
	b, err := conflist(h, labPluginDir)
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
		// The exec is given, not left nil: libcni sets a nil one up lazily
		// in every call, a data race between the pods attached at once.
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(h.DataDir, "cache"), &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		}),
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
