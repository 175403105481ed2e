// Package teardown removes what weftd set up on a node, for decommissioning
// it: the node's lease in etcd (in Kubernetes mode, its Node's lease
// annotations: the podCIDR is kube-controller-manager's and stays), the
// VXLAN device (with its routes,
// neighbours and FDB entries), the WireGuard device or the host-gw routes,
// the firewall rules (the iptables chains and the nftables tables, whichever
// mode left them), and subnet.env. It works in the network namespace of the
// calling thread.
// A plain agent stop never does any of this: only an explicit teardown does.
package teardown

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/nftables"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// Leases is what teardown needs of the lease store (*etcd.Store, which owns
// the key schema).
type Leases interface {
	// ReadConfig reads the network config once.
	ReadConfig(ctx context.Context) (*subnet.Config, error)
	// GetLease returns the lease or reservation holding a subnet (of either
	// family), or nil.
	GetLease(ctx context.Context, sn netip.Prefix) (*subnet.Lease, error)
	// ReleaseLease deletes the lease if it is still bound to its etcd
	// lease, and revokes that etcd lease.
	ReleaseLease(ctx context.Context, l *subnet.Lease) error
}

// Node is what teardown needs of the node's Node in Kubernetes mode.
type Node interface {
	// Name names the Node.
	Name() string
	// Release removes the node's lease annotations (peers then drop the
	// node) and returns its podCIDRs, which stay with the Node.
	Release(ctx context.Context) (podCIDRs []string, err error)
}

// KubeNode is the node's Node in Kubernetes mode, over the API.
type KubeNode struct {
	API         kube.API
	Annotations kube.Annotations
	NodeName    string
}

// Name implements Node.
func (k KubeNode) Name() string { return k.NodeName }

// Release implements Node.
func (k KubeNode) Release(ctx context.Context) ([]string, error) {
	return kube.RemoveLeaseAnnotations(ctx, k.API, k.Annotations, k.NodeName)
}

// Options says what to tear down.
type Options struct {
	// Leases reaches the node's lease in etcd; nil leaves the leases alone.
	Leases Leases
	// Node is the node's Node in Kubernetes mode (instead of Leases): its
	// lease annotations are removed; nil leaves the Node alone.
	Node Node
	// Networks are the overlay's networks when subnet.env is gone and no
	// etcd config says them (Kubernetes mode: net-conf.json's).
	Networks []netip.Prefix
	// SubnetFile is the agent's subnet.env, which names the node's subnet.
	SubnetFile string
	// Subnet and IPv6Subnet are the node's subnets when subnet.env is gone
	// (optional).
	Subnet, IPv6Subnet netip.Prefix
	// PublicIP, when set, guards the release: a lease advertising another
	// address (PublicIP, or PublicIPv6 for an IPv6-only node) belongs to
	// another node and is kept.
	PublicIP netip.Addr
	// KeepIPTables leaves the firewall rules in place: the iptables chains
	// and the nftables tables.
	KeepIPTables bool
	// Firewalls are removed unless KeepIPTables; nil means both modes of
	// this host (iptables and nftables; a mode whose command is missing
	// has nothing to remove).
	Firewalls map[firewall.Mode]firewall.Firewall
	Log       *slog.Logger
}

// Report says what was removed.
type Report struct {
	Released []string // subnets whose lease was released
	// Node is the Node whose lease annotations were removed (Kubernetes
	// mode), PodCIDRs the subnets it keeps.
	Node     string
	PodCIDRs []string
	Links    []string // links deleted
	Routes   []string // routes deleted
	IPTables bool     // iptables chains removed (or iptables not installed)
	NFTables bool     // nftables tables removed (or nft not installed)
	EnvFile  bool     // subnet.env removed
}

// Run tears the node down. It carries on past errors and returns them all,
// so that a second run finishes what the first could not.
func Run(ctx context.Context, o Options) (*Report, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	r := &Report{}
	var errs []error

	own, own6 := o.Subnet, o.IPv6Subnet
	var networks []netip.Prefix
	env, err := subnetenv.Read(o.SubnetFile)
	switch {
	case err == nil:
		own, own6 = env.Subnet.Masked(), env.IPv6Subnet.Masked()
		networks = append(append(networks, env.Networks...), env.IPv6Networks...)
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no subnet.env", "path", o.SubnetFile)
	default:
		errs = append(errs, err)
	}
	if o.Leases != nil {
		cfg, err := o.Leases.ReadConfig(ctx)
		if err != nil {
			errs = append(errs, err)
		} else if len(networks) == 0 {
			for _, n := range []netip.Prefix{cfg.Network, cfg.IPv6Network} {
				if n.IsValid() {
					networks = append(networks, n)
				}
			}
		}
		if first := cmp.Or(own, own6); first.IsValid() {
			released, err := release(ctx, o.Leases, first, o.PublicIP)
			if err != nil {
				errs = append(errs, err)
			} else if released != "" {
				r.Released = append(r.Released, released)
				log.Info("released the lease", "subnet", released)
			}
		}
	}

	if o.Node != nil {
		cidrs, err := o.Node.Release(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			r.Node, r.PodCIDRs = o.Node.Name(), cidrs
			log.Info("removed the lease annotations", "node", r.Node, "pod_cidrs", cidrs)
			for _, c := range cidrs {
				// (subnet.env gone: the podCIDRs say the own subnets)
				p, err := netip.ParsePrefix(c)
				switch {
				case err != nil:
				case p.Addr().Is4() && !own.IsValid():
					own = p
				case p.Addr().Is6() && !own6.IsValid():
					own6 = p
				}
			}
		}
	}
	if len(networks) == 0 {
		networks = o.Networks
	}

	links, routes, err := removeKernelState(networks, own, own6)
	r.Links, r.Routes = links, routes
	if err != nil {
		errs = append(errs, err)
	}

	if !o.KeepIPTables {
		fws := o.Firewalls
		if fws == nil {
			fws = hostFirewalls(log)
		}
		for _, mode := range []firewall.Mode{firewall.IPTables, firewall.NFTables} {
			fw, ok := fws[mode]
			if ok && fw != nil {
				if err := fw.Remove(ctx); err != nil {
					errs = append(errs, fmt.Errorf("removing the %s rules: %w", mode, err))
					continue
				}
			}
			if mode == firewall.IPTables {
				r.IPTables = ok
			} else {
				r.NFTables = ok
			}
		}
	}

	if err := os.Remove(o.SubnetFile); err == nil {
		r.EnvFile = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", o.SubnetFile, err))
	}
	return r, errors.Join(errs...)
}

// hostFirewalls opens both firewall modes of this host. A mode whose
// command is missing maps to nil: nothing of it can be there.
func hostFirewalls(log *slog.Logger) map[firewall.Mode]firewall.Firewall {
	fws := map[firewall.Mode]firewall.Firewall{firewall.IPTables: nil, firewall.NFTables: nil}
	if fw, err := iptables.NewFirewall(log); err == nil {
		fws[firewall.IPTables] = fw
	} else {
		log.Info("iptables rules not removed", "err", err)
	}
	if fw, err := nftables.New(log); err == nil {
		fws[firewall.NFTables] = fw
	} else {
		log.Info("nftables tables not removed", "err", err)
	}
	return fws
}

// release releases the node's lease holding own (a subnet of either
// family) if it still advertises publicIP (when given: its PublicIP, or
// PublicIPv6) and returns the subnets it released. A reservation is kept:
// it is the operator's, not the agent's.
func release(ctx context.Context, ls Leases, own netip.Prefix, publicIP netip.Addr) (string, error) {
	l, err := ls.GetLease(ctx, own)
	if l == nil {
		return "", err // nothing to release, or the store failed
	}
	if l.Reserved() {
		return "", fmt.Errorf("%s is a reservation (no etcd lease); remove it with 'weft leases release %s' if you mean to", own, own)
	}
	// An undecodable value names no owner: it is released like any other.
	if publicIP.IsValid() && err == nil && l.Attrs.PublicIP != publicIP && l.Attrs.IPv6() != publicIP {
		return "", fmt.Errorf("the lease of %s now belongs to %s, not %s: kept", own, l.Attrs.NodeIP(), publicIP)
	}
	if err := ls.ReleaseLease(ctx, l); err != nil {
		return "", err
	}
	var sns []string
	for _, p := range []netip.Prefix{l.Subnet, l.IPv6Subnet} {
		if p.IsValid() {
			sns = append(sns, p.String())
		}
	}
	return strings.Join(sns, " "), nil
}

// removeKernelState deletes flannel.* and flannel-v6.* VXLAN devices
// (their routes, neighbours and FDB entries go with them), the WireGuard
// devices flannel-wg and flannel-wg-v6 (with their routes), and routes of
// either family to other subnets of the networks through a gateway
// (host-gw, DirectRouting).
func removeKernelState(networks []netip.Prefix, own, own6 netip.Prefix) (links, routes []string, err error) {
	h, err := netlinkx.Open()
	if err != nil {
		return nil, nil, err
	}
	defer h.Close()
	var errs []error
	all, err := h.Links()
	if err != nil {
		return nil, nil, err
	}
	for _, l := range all {
		vxlan := l.Type == "vxlan" && (strings.HasPrefix(l.Name, "flannel.") || strings.HasPrefix(l.Name, "flannel-v6."))
		// The wireguard backend's device: a kernel WireGuard link, or the
		// userspace engine's persistent TUN.
		wireguard := (l.Name == "flannel-wg" || l.Name == "flannel-wg-v6") && (l.Type == "wireguard" || l.Type == "tuntap" || l.Type == "tun")
		if !vxlan && !wireguard {
			continue
		}
		if err := h.DeleteLink(l.Index); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s: %w", l.Name, err))
			continue
		}
		links = append(links, l.Name)
	}
	if len(networks) == 0 {
		return links, routes, errors.Join(errs...)
	}
	rs, err := h.Routes(netlinkx.MainTable, 0)
	if err != nil {
		return links, routes, errors.Join(append(errs, err)...)
	}
	for _, rt := range rs {
		if !rt.Gw.IsValid() || rt.Dst == own || rt.Dst == own6 || !inAny(networks, rt.Dst) {
			continue
		}
		if err := h.DeleteRoute(rt); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
			errs = append(errs, fmt.Errorf("deleting the route to %s: %w", rt.Dst, err))
			continue
		}
		routes = append(routes, rt.Dst.String())
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
