package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/subnet/subnetenv"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// About is printed when the plugin is run without CNI_COMMAND.
const About = "flannel CNI meta-plugin (weft): delegates to bridge + host-local configured from subnet.env"

// Plugin is the meta-plugin. The zero value runs delegates found in
// CNI_PATH and prints results to os.Stdout.
type Plugin struct {
	// Exec runs delegate plugins; nil runs them as processes.
	Exec Exec
	// Stdout receives the ADD result; nil is os.Stdout.
	Stdout io.Writer
	// Stderr receives warnings; nil is os.Stderr.
	Stderr io.Writer
}

// Add generates the delegate config, caches it in dataDir/<containerID>
// and delegates ADD. If the delegate fails, it is asked to DEL and the
// cache is removed before the error is returned.
func (p *Plugin) Add(args *CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := readEnv(n.SubnetFile)
	if err != nil {
		return err
	}
	conf := DelegateConf(n, env)
	data, err := marshalConf(conf)
	if err != nil {
		return err
	}
	a := attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := writeCache(n.DataDir, a, conf); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("caching the delegate config in %s: %v", n.DataDir, err), "")
	}
	ctx := context.Background()
	typ := conf["type"].(string)
	result, err := p.delegateAdd(ctx, typ, data)
	if err != nil {
		// Undo what the delegate may have done (an allocated address, a
		// veth), then forget the attachment.
		if derr := p.delegateVerb(ctx, "DEL", typ, data); derr != nil {
			p.warnf("after the failed ADD of %s, DEL on the delegate %s failed too: %v", args.ContainerID, typ, derr)
		}
		if rerr := removeCache(n.DataDir, args.ContainerID); rerr != nil {
			p.warnf("%v", rerr)
		}
		return explainStaleBridge(delegateError("ADD", typ, err), conf, env.Subnet.String())
	}
	out := p.Stdout
	if out == nil {
		out = os.Stdout
	}
	if err := result.PrintTo(out); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("printing the result: %v", err), "")
	}
	return nil
}

// Del delegates DEL with the cached config, or, when the cache is missing
// or corrupt, with one rebuilt from subnet.env so that the address is still
// released; then it removes the cache. When subnet.env is unusable too, it
// delegates DEL with a placeholder range (see placeholderEnv): the
// delegates release by container ID and interface name, not by address.
// DEL of an unknown or already deleted container succeeds; so does DEL
// after the netns is gone (the delegate then only releases the address).
func (p *Plugin) Del(args *CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	conf, err := p.delegateConfFor(n, args.ContainerID)
	if err != nil {
		// Neither a cache nor a usable subnet.env. A runtime drops what
		// the plugin writes to stderr and never retries a successful DEL,
		// so succeeding here would leak the address for good.
		p.warnf("DEL of %s: %s; releasing through the delegate with a placeholder range", args.ContainerID, errMsg(err))
		conf = DelegateConf(n, placeholderEnv())
	}
	data, err := marshalConf(conf)
	if err != nil {
		return err
	}
	typ := conf["type"].(string)
	if err := p.delegateVerb(context.Background(), "DEL", typ, data); err != nil {
		return delegateError("DEL", typ, err) // keep the cache for a retry
	}
	return removeCacheErr(n.DataDir, args.ContainerID)
}

// Check delegates CHECK with the cached config (rebuilt from subnet.env if
// the cache is missing) and the runtime's prevResult.
func (p *Plugin) Check(args *CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	conf, err := p.delegateConfFor(n, args.ContainerID)
	if err != nil {
		return err
	}
	conf["cniVersion"] = n.CNIVersion
	if n.PrevResult != nil {
		conf["prevResult"] = n.PrevResult
	}
	data, err := marshalConf(conf)
	if err != nil {
		return err
	}
	typ := conf["type"].(string)
	if err := p.delegateVerb(context.Background(), "CHECK", typ, data); err != nil {
		return delegateError("CHECK", typ, err)
	}
	return nil
}

// GC deletes, through the delegate and with its cached config, every
// cached attachment of this network that is not in
// cni.dev/valid-attachments, removes its cache file, and then forwards GC
// to the delegate. A cache file without an interface name (written by
// flannel's own plugin) is kept while its container has any valid
// attachment. A corrupt cache file is removed; the address it held is
// released by the IPAM plugin's GC, which is run after the delegate's.
func (p *Plugin) GC(args *CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[attachment]bool{}
	validID := map[string]bool{}
	keep := n.ValidAttachments
	if keep == nil {
		keep = n.LegacyAttachments
	}
	for _, a := range keep {
		valid[attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		validID[a.ContainerID] = true
	}
	ids, err := cachedIDs(n.DataDir)
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("GC: %v", err), "")
	}
	ctx := context.Background()
	var errs []error
	for _, id := range ids {
		c, err := readCache(n.DataDir, id)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			// Unusable: it cannot be deleted through the delegate; the
			// IPAM plugin's GC below releases its address.
			p.warnf("GC: dropping %v", err)
			errs = append(errs, removeCache(n.DataDir, id))
			continue
		}
		if name, _ := c.Conf["name"].(string); name != n.Name {
			continue // another network sharing the dataDir
		}
		if valid[c.attachment] || (c.IfName == "" && validID[id]) {
			continue
		}
		if err := p.delAttachment(ctx, c, args.Path); err != nil {
			errs = append(errs, fmt.Errorf("deleting stale attachment %s/%s: %w", c.ContainerID, c.IfName, err))
			continue
		}
		errs = append(errs, removeCache(n.DataDir, id))
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("GC: %v", err), "")
	}
	env, err := readEnv(n.SubnetFile)
	if err != nil {
		return err
	}
	conf := DelegateConf(n, env)
	conf["cni.dev/valid-attachments"] = keep
	data, err := marshalConf(conf)
	if err != nil {
		return err
	}
	typ := conf["type"].(string)
	if err := p.delegateVerb(ctx, "GC", typ, data); err != nil {
		return delegateError("GC", typ, err)
	}
	// The reference bridge (v1.10) neither implements GC nor passes it to
	// its IPAM plugin, so addresses leaked without a cache entry (by a
	// crash, or by flannel's own plugin) would stay. Ask the IPAM plugin
	// too; its GC releases whatever no valid attachment holds, so running
	// it twice, should the delegate learn to forward it, is harmless.
	ipamType, _ := conf["ipam"].(map[string]any)["type"].(string)
	if err := p.delegateVerb(ctx, "GC", ipamType, data); err != nil {
		return delegateError("GC", ipamType, err)
	}
	return nil
}

// delAttachment runs the delegate's DEL for one cached attachment, with its
// own container ID and interface name and no netns (the container is
// gone).
func (p *Plugin) delAttachment(ctx context.Context, c *cached, cniPath string) error {
	ifName := c.IfName
	if ifName == "" {
		ifName = "eth0" // a flannel cache file does not record it
	}
	data, err := marshalConf(c.Conf)
	if err != nil {
		return err
	}
	typ := c.Conf["type"].(string)
	_, err = p.delegate(ctx, typ, data, cniPath,
		"CNI_COMMAND=DEL", "CNI_CONTAINERID="+c.ContainerID, "CNI_NETNS=", "CNI_ARGS=",
		"CNI_IFNAME="+ifName, "CNI_PATH="+cniPath)
	return err
}

// Status fails with code 50 while subnet.env is missing or unusable, and
// otherwise forwards STATUS to the delegate.
func (p *Plugin) Status(args *CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := readEnv(n.SubnetFile)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "cannot add pods yet: "+errMsg(err), "")
	}
	data, err := marshalConf(DelegateConf(n, env))
	if err != nil {
		return err
	}
	typ := n.delegateType()
	if err := p.delegateVerb(context.Background(), "STATUS", typ, data); err != nil {
		return delegateError("STATUS", typ, err)
	}
	return nil
}

func (n *NetConf) delegateType() string {
	if t, ok := n.Delegate["type"].(string); ok {
		return t
	}
	return DefaultDelegate
}

// placeholderEnv is the subnet.env DEL uses when neither the cache nor the
// node's subnet.env is there: the delegates need a well-formed range to
// parse their config, but the reference bridge deletes the container's
// interface by name and host-local releases every address it holds for
// the container ID and interface name, whatever the range. The range is
// TEST-NET-1 (RFC 5737), which no pod holds. FLANNEL_IPMASQ is false, so
// that the bridge also removes the masquerade rules it would have added
// (it tolerates their absence).
func placeholderEnv() *subnetenv.Env {
	return &subnetenv.Env{Subnet: netip.MustParsePrefix("192.0.2.1/24")}
}

// errMsg is the message of a CNI error, or the error's text.
func errMsg(err error) string {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Msg
	}
	return err.Error()
}

// delegateConfFor returns the cached delegate config of a container, or,
// when the cache is missing or corrupt, one rebuilt from subnet.env.
func (p *Plugin) delegateConfFor(n *NetConf, containerID string) (map[string]any, error) {
	c, err := readCache(n.DataDir, containerID)
	if err == nil {
		return c.Conf, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		p.warnf("%v; rebuilding the delegate config from %s", err, n.SubnetFile)
	}
	env, eerr := readEnv(n.SubnetFile)
	if eerr != nil {
		return nil, eerr
	}
	return DelegateConf(n, env), nil
}

func marshalConf(conf map[string]any) ([]byte, error) {
	data, err := json.Marshal(conf)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("encoding the delegate config: %v", err), "")
	}
	return data, nil
}

func removeCacheErr(dataDir, containerID string) error {
	if err := removeCache(dataDir, containerID); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	return nil
}

// ErrDelegateFailed is the plugin-specific code (the spec leaves 100 and up
// to plugins) of a delegate failure that carried no spec code of its own
// (the reference plugins report most failures as 999, internal error).
const ErrDelegateFailed uint = 100

// delegateError names the delegate and verb in a delegate's error. A
// delegate's spec code (1 to 99, or its own 100+) is passed on; a bare
// internal error (999) or none becomes ErrDelegateFailed, and a failure to
// run the delegate at all is an I/O error.
func delegateError(verb, typ string, err error) error {
	var te *types.Error
	if !errors.As(err, &te) {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("%s: running the delegate plugin %q: %v", verb, typ, err), "")
	}
	code := te.Code
	if code == types.ErrInternal || code == types.ErrUnknown {
		code = ErrDelegateFailed
	}
	return types.NewError(code, fmt.Sprintf("delegate %s %s: %s", typ, verb, te.Msg), te.Details)
}

func (p *Plugin) warnf(format string, args ...any) {
	fmt.Fprintf(p.stderr(), "flannel: "+format+"\n", args...)
}

func (p *Plugin) stderr() io.Writer {
	if p.Stderr == nil {
		return os.Stderr
	}
	return p.Stderr
}
