// Package cnitest runs the flannel meta-plugin and its delegates the way a
// container runtime does, for tests: it builds the real plugin binaries,
// gives a test "host" (a network namespace of its own) its own subnet.env,
// plugin cache and host-local store, and adds pods to it through libcni.
//
// Everything a Host runs happens inside its namespace: the bridge cni0, the
// veths and any iptables rules land there, never in the root namespace.
// All of it needs root (see netnstest.SkipUnlessRoot).
package cnitest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/cniplugin"
	"github.com/weftnet/weft/subnet/subnetenv"
	"github.com/weftnet/weft/test/bintest"
	"github.com/weftnet/weft/test/netnstest"
)

// Plugins maps each binary BuildPlugins builds to its package.
var Plugins = map[string]string{
	"flannel":    "github.com/weftnet/weft/cmd/flannel",
	"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
	"loopback":   "github.com/containernetworking/plugins/plugins/main/loopback",
}

// BuildPlugins builds the flannel plugin (with -race when the tests run
// with it) and the pinned reference plugins (the versions in go.mod) into
// dir (see bintest.Build). It is meant for TestMain, so it takes no
// testing.T.
func BuildPlugins(dir string) error {
	return bintest.Build(dir, slices.Collect(maps.Values(Plugins))...)
}

// NewCNIConfig returns a libcni runner for the plugins in binDir, safe for
// concurrent use (libcni sets up a nil exec lazily, racing with itself).
func NewCNIConfig(binDir, cacheDir string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	})
}

// DefaultEnv is a subnet.env for tests: network 10.244.0.0/16, this host's
// subnet 10.244.52.0/24, MTU 1450, masquerading by the agent.
func DefaultEnv() *subnetenv.Env {
	return &subnetenv.Env{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet:   netip.MustParsePrefix("10.244.52.1/24"),
		MTU:      1450,
		IPMasq:   true,
	}
}

// Host is a test node: a network namespace with its own subnet.env, plugin
// cache (dataDir), host-local store and libcni cache, in temp directories.
type Host struct {
	NS *netnstest.NS
	// BinDir holds the plugin binaries (CNI_PATH).
	BinDir     string
	SubnetFile string
	DataDir    string
	IPAMDir    string
	CacheDir   string
	// CNI runs plugins from BinDir with CacheDir as libcni's cache.
	CNI *libcni.CNIConfig
}

// NewHost creates a host namespace and its directories, and writes env (if
// not nil) as its subnet.env. Everything is removed when the test ends.
func NewHost(t testing.TB, binDir string, env *subnetenv.Env) *Host {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "cnihost")
	h := Attach(t, ns, binDir, "")
	if env != nil {
		if err := subnetenv.Write(h.SubnetFile, env); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// Attach makes a Host of an existing namespace, for instance one where a
// weftd agent runs and writes subnetFile (empty: a file in a temp
// directory, for the test to write). The plugin cache, host-local store and
// libcni cache are fresh temp directories.
func Attach(t testing.TB, ns *netnstest.NS, binDir, subnetFile string) *Host {
	t.Helper()
	dir := t.TempDir()
	if subnetFile == "" {
		subnetFile = filepath.Join(dir, "run", "subnet.env")
	}
	h := &Host{
		NS:         ns,
		BinDir:     binDir,
		SubnetFile: subnetFile,
		DataDir:    filepath.Join(dir, "flannel"),
		IPAMDir:    filepath.Join(dir, "networks"),
		CacheDir:   filepath.Join(dir, "cache"),
	}
	h.CNI = NewCNIConfig(binDir, h.CacheDir)
	return h
}

// StockConfList returns flannel's stock conflist (flannel with hairpin mode
// and a default gateway, then portmap) at the given spec version, pointed at
// the host's own subnet.env, dataDir and host-local store.
func (h *Host) StockConfList(t testing.TB, cniVersion string) *libcni.NetworkConfigList {
	t.Helper()
	return h.confList(t, cniVersion, true)
}

// FlannelConfList is StockConfList without portmap.
func (h *Host) FlannelConfList(t testing.TB, cniVersion string) *libcni.NetworkConfigList {
	t.Helper()
	return h.confList(t, cniVersion, false)
}

func (h *Host) confList(t testing.TB, cniVersion string, portmap bool) *libcni.NetworkConfigList {
	t.Helper()
	b, err := cniplugin.ConfList{
		Name: "cbr0", CNIVersion: cniVersion,
		SubnetFile: h.SubnetFile, DataDir: h.DataDir, IPAMDataDir: h.IPAMDir,
		NoPortmap: !portmap,
	}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return h.parseBytes(t, b)
}

// DelegateConfList returns the configuration the flannel meta-plugin
// generates for its delegate from the net conf flannel (its first plugin,
// with the list's name and cniVersion as libcni passes them) and the
// host's subnet.env, as a conflist of that one delegate: bridge +
// host-local without the meta-plugin, doing the same work (the
// benchmark's baseline). It calls the plugin's own code, so the two cannot
// drift apart.
func (h *Host) DelegateConfList(t testing.TB, flannel *libcni.NetworkConfigList) *libcni.NetworkConfigList {
	t.Helper()
	if len(flannel.Plugins) == 0 || flannel.Plugins[0].Network.Type != "flannel" {
		t.Fatalf("conflist %q: the first plugin is not flannel", flannel.Name)
	}
	var conf map[string]any
	if err := json.Unmarshal(flannel.Plugins[0].Bytes, &conf); err != nil {
		t.Fatalf("conflist %q: flannel's config: %v", flannel.Name, err)
	}
	conf["name"], conf["cniVersion"] = flannel.Name, flannel.CNIVersion
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cniplugin.ParseNetConf(stdin)
	if err != nil {
		t.Fatalf("conflist %q: %v", flannel.Name, err)
	}
	env, err := subnetenv.Read(n.SubnetFile)
	if err != nil {
		t.Fatalf("conflist %q: %v", flannel.Name, err)
	}
	delegate := cniplugin.DelegateConf(n, env)
	return h.parseList(t, map[string]any{"name": flannel.Name, "cniVersion": flannel.CNIVersion, "plugins": []any{delegate}})
}

func (h *Host) parseList(t testing.TB, v map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return h.parseBytes(t, b)
}

func (h *Host) parseBytes(t testing.TB, b []byte) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("parsing conflist %s: %v", b, err)
	}
	return l
}

// Do runs f on a thread inside the host namespace; the plugins that libcni
// starts from there run in the host namespace too.
func (h *Host) Do(f func() error) error { return h.NS.Do(f) }

// Pod is a pod: a network namespace of its own and its attachment.
type Pod struct {
	// NSName and NSPath name the pod's namespace (/var/run/netns/<NSName>).
	NSName, NSPath string
	ContainerID    string
	IfName         string
	Result         *current.Result
	// Addr is the pod's first address, e.g. 10.244.52.2/24.
	Addr netip.Prefix
}

// RuntimeConf is the libcni runtime config of the pod's attachment.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NSPath, IfName: p.IfName}
}

// Exec runs a command inside the pod's namespace.
func (p *Pod) Exec(args ...string) (string, error) {
	return netnstest.Run(append([]string{"ip", "netns", "exec", p.NSName}, args...)...)
}

// DeleteNS deletes the pod's namespace (as a runtime does when the pod
// dies), taking the pod's end of the veth and so the veth with it.
func (p *Pod) DeleteNS() error {
	_, err := netnstest.Run("ip", "netns", "del", p.NSName)
	return err
}

// NewPod creates a pod namespace, removed when the test ends unless
// already gone, without attaching it.
func (h *Host) NewPod(t testing.TB) *Pod {
	t.Helper()
	name := "weft-cnipod-" + netnstest.Suffix(8)
	netnstest.MustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _, _ = netnstest.Run("ip", "netns", "del", name) })
	return &Pod{NSName: name, NSPath: "/var/run/netns/" + name, ContainerID: "weft-" + netnstest.Suffix(16), IfName: "eth0"}
}

// AddPod creates a pod namespace and ADDs it to list through libcni from
// inside the host namespace; the attachment is DELeted when the test ends
// (before the pod namespace goes). It fails the test on error.
func (h *Host) AddPod(t testing.TB, list *libcni.NetworkConfigList) *Pod {
	t.Helper()
	p := h.NewPod(t)
	if err := h.Add(list, p); err != nil {
		t.Fatalf("ADD %s: %v", p.ContainerID, err)
	}
	t.Cleanup(func() { _ = h.Del(list, p) })
	return p
}

// Add runs the list's ADD for the pod and records its result and address.
func (h *Host) Add(list *libcni.NetworkConfigList, p *Pod) error {
	var res types.Result
	err := h.Do(func() (err error) {
		res, err = h.CNI.AddNetworkList(context.Background(), list, p.RuntimeConf())
		return err
	})
	if err != nil {
		return err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("converting the ADD result: %w", err)
	}
	p.Result = r
	if len(r.IPs) == 0 {
		return fmt.Errorf("ADD of %s returned no address: %v", p.ContainerID, r)
	}
	a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP)
	ones, _ := r.IPs[0].Address.Mask.Size()
	p.Addr = netip.PrefixFrom(a.Unmap(), ones)
	return nil
}

// Del runs the list's DEL for the pod.
func (h *Host) Del(list *libcni.NetworkConfigList, p *Pod) error {
	return h.Do(func() error { return h.CNI.DelNetworkList(context.Background(), list, p.RuntimeConf()) })
}

// Check runs the list's CHECK for the pod.
func (h *Host) Check(list *libcni.NetworkConfigList, p *Pod) error {
	return h.Do(func() error { return h.CNI.CheckNetworkList(context.Background(), list, p.RuntimeConf()) })
}

// AllocatedIPs lists the addresses host-local holds for network name.
func (h *Host) AllocatedIPs(t testing.TB, name string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.IPAMDir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// CacheFiles lists the plugin's cache files (hidden temporary files
// included, so that a leaked one shows).
func (h *Host) CacheFiles(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(h.DataDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Veths lists the veth interfaces in the host namespace.
func (h *Host) Veths(t testing.TB) []string {
	t.Helper()
	out := h.NS.MustExec(t, "ip", "-o", "link", "show", "type", "veth")
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.Split(f[1], "@")[0], ":"))
		}
	}
	return names
}
