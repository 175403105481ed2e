// Package teardown removes what weftd set up on a node, for decommissioning
// it: the node's lease in etcd, the VXLAN device (with its routes,
// neighbours and FDB entries), the WireGuard device or the host-gw routes, the iptables chains,
// and subnet.env. It works in the network namespace of the calling thread.
// A plain agent stop never does any of this: only an explicit teardown does.
package teardown

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// Options says what to tear down.
type Options struct {
	// Client and Prefix reach the leases; a nil Client leaves etcd alone.
	Client *clientv3.Client
	Prefix string
	// SubnetFile is the agent's subnet.env, which names the node's subnet.
	SubnetFile string
	// Subnet is the node's subnet when subnet.env is gone (optional).
	Subnet netip.Prefix
	// PublicIP, when set, guards the release: a lease advertising another
	// address belongs to another node and is kept.
	PublicIP netip.Addr
	// KeepIPTables leaves the iptables chains in place.
	KeepIPTables bool
	// IPTables runs the iptables commands; nil finds iptables on the host.
	IPTables iptables.IPTables
	Log      *slog.Logger
}

// Report says what was removed.
type Report struct {
	Released []string // lease keys deleted
	Links    []string // links deleted
	Routes   []string // routes deleted
	IPTables bool     // chains removed
	EnvFile  bool     // subnet.env removed
}

// Run tears the node down. It carries on past errors and returns them all,
// so that a second run finishes what the first could not.
func Run(ctx context.Context, o Options) (*Report, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Prefix == "" {
		o.Prefix = "/coreos.com/network"
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	r := &Report{}
	var errs []error

	own := o.Subnet
	var networks []netip.Prefix
	env, err := subnetenv.Read(o.SubnetFile)
	switch {
	case err == nil:
		own = env.Subnet.Masked()
		networks = env.Networks
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no subnet.env", "path", o.SubnetFile)
	default:
		errs = append(errs, err)
	}
	if o.Client != nil {
		cfg, err := readConfig(ctx, o.Client, o.Prefix)
		if err != nil {
			errs = append(errs, err)
		} else if len(networks) == 0 {
			networks = []netip.Prefix{cfg.Network}
		}
		if own.IsValid() {
			key, err := release(ctx, o.Client, o.Prefix, own, o.PublicIP)
			if err != nil {
				errs = append(errs, err)
			} else if key != "" {
				r.Released = append(r.Released, key)
				log.Info("released the lease", "key", key)
			}
		}
	}

	links, routes, err := removeKernelState(networks, own)
	r.Links, r.Routes = links, routes
	if err != nil {
		errs = append(errs, err)
	}

	if !o.KeepIPTables {
		ipt := o.IPTables
		if ipt == nil {
			ipt, err = iptables.New(false)
		}
		if err == nil {
			err = iptables.Teardown(ctx, ipt)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing iptables chains: %w", err))
		} else {
			r.IPTables = true
		}
	}

	if err := os.Remove(o.SubnetFile); err == nil {
		r.EnvFile = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", o.SubnetFile, err))
	}
	return r, errors.Join(errs...)
}

func readConfig(ctx context.Context, cli *clientv3.Client, prefix string) (*subnet.Config, error) {
	resp, err := cli.Get(ctx, prefix+"/config")
	if err != nil {
		return nil, fmt.Errorf("reading %s/config: %w", prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("no network config at %s/config", prefix)
	}
	cfg, _, err := subnet.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("%s/config: %w", prefix, err)
	}
	return cfg, nil
}

// release deletes the node's lease key if it still advertises publicIP (when
// given), and revokes its etcd lease. A reservation is kept: it is the
// operator's, not the agent's.
func release(ctx context.Context, cli *clientv3.Client, prefix string, own netip.Prefix, publicIP netip.Addr) (string, error) {
	key := prefix + "/subnets/" + subnet.SubnetKey(own, netip.Prefix{})
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	kv := resp.Kvs[0]
	if kv.Lease == 0 {
		return "", fmt.Errorf("%s is a reservation (no etcd lease); remove it with 'weft leases release %s' if you mean to", key, own)
	}
	if publicIP.IsValid() {
		attrs, err := subnet.ParseLeaseAttrs(kv.Value)
		if err == nil && attrs.PublicIP != publicIP {
			return "", fmt.Errorf("%s now belongs to %s, not %s: kept", key, attrs.PublicIP, publicIP)
		}
	}
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return "", fmt.Errorf("deleting %s: %w", key, err)
	}
	if !txn.Succeeded {
		return "", fmt.Errorf("%s changed while it was being released; run the teardown again", key)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !strings.Contains(err.Error(), "not found") {
		return key, fmt.Errorf("revoking the etcd lease of %s: %w", key, err)
	}
	return key, nil
}

// removeKernelState deletes flannel.* VXLAN devices (their routes,
// neighbours and FDB entries go with them), the WireGuard devices
// flannel-wg and flannel-wg-v6 (with their route), and routes to other subnets of
// the networks through a gateway (host-gw, DirectRouting).
func removeKernelState(networks []netip.Prefix, own netip.Prefix) (links, routes []string, err error) {
	var errs []error
	all, lerr := netlink.LinkList()
	if lerr != nil && !errors.Is(lerr, netlink.ErrDumpInterrupted) {
		return nil, nil, fmt.Errorf("listing links: %w", lerr)
	}
	for _, l := range all {
		name := l.Attrs().Name
		vxlan := l.Type() == "vxlan" && (strings.HasPrefix(name, "flannel.") || strings.HasPrefix(name, "flannel-v6."))
		// The wireguard backend's device: a kernel WireGuard link, or the
		// userspace engine's persistent TUN.
		wireguard := (name == "flannel-wg" || name == "flannel-wg-v6") && (l.Type() == "wireguard" || l.Type() == "tuntap" || l.Type() == "tun")
		if !vxlan && !wireguard {
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s: %w", name, err))
			continue
		}
		links = append(links, name)
	}
	if len(networks) == 0 {
		return links, routes, errors.Join(errs...)
	}
	rs, rerr := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if rerr != nil && !errors.Is(rerr, netlink.ErrDumpInterrupted) {
		return links, routes, errors.Join(append(errs, fmt.Errorf("listing routes: %w", rerr))...)
	}
	for _, rt := range rs {
		if rt.Dst == nil || rt.Gw == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(rt.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := rt.Dst.Mask.Size()
		p := netip.PrefixFrom(dst.Unmap(), ones)
		if p == own || !inAny(networks, p) {
			continue
		}
		if err := netlink.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("deleting the route to %s: %w", p, err))
			continue
		}
		routes = append(routes, p.String())
	}
	return links, routes, errors.Join(errs...)
}

func inAny(networks []netip.Prefix, p netip.Prefix) bool {
	for _, n := range networks {
		if n.Bits() < p.Bits() && n.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
