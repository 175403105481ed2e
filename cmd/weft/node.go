package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/weftnet/weft/internal/kubeflags"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/ops/teardown"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// runNode runs `weft node teardown`.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "teardown" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stderr, "usage: weft node teardown [flags]")
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: weft node teardown [flags] (the only node command)", errUsage)
	}
	fs := flag.NewFlagSet("weft node teardown", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f leaseFlags
	f.register(fs)
	f.registerKube(fs)
	subnetFile := fs.String("subnet-file", subnetenv.DefaultPath, "weftd's subnet.env, which names this node's subnet")
	publicIP := fs.String("public-ip", "", "release the lease only if it still advertises this address (default: the address in the lease is not checked)")
	keepLease := fs.Bool("keep-lease", false, "leave the lease in etcd, or in Kubernetes mode the Node's lease annotations (remove only what is on this machine)")
	keepIPT := fs.Bool("keep-iptables", false, "leave the firewall rules in place (the FLANNEL-POSTRTG and FLANNEL-FWD chains, the flannel-ipv4 and flannel-ipv6 nftables tables)")
	setUsage(fs, "weft node teardown [flags]\n\nRemoves what weftd programmed on this node (the flannel.<VNI> and\nflannel-v6.<VNI> devices with their routes, neighbours and FDB entries, the flannel-wg device, host-gw routes, iptables chains, nftables tables, subnet.env)\nand releases its lease. Stop weftd first, or it puts everything back.\n\nIn Kubernetes mode (-kube-subnet-mgr, with NODE_NAME as weftd) the lease\nis the Node's podCIDR, which kube-controller-manager owns: it stays with the\nNode (kubectl delete node frees it). Teardown removes the Node's lease\nannotations instead, so that peers drop the node at once.")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if err := f.fromEnv(fs); err != nil {
		return err
	}
	o := teardown.Options{SubnetFile: *subnetFile, KeepIPTables: *keepIPT}
	if *publicIP != "" && f.kube.Enabled {
		return fmt.Errorf("%w: -public-ip guards the release of an etcd lease; in Kubernetes mode the Node is the one NODE_NAME names", errUsage)
	}
	if *publicIP != "" {
		a, err := netip.ParseAddr(*publicIP)
		if err != nil {
			return fmt.Errorf("%w: -public-ip %q: %v", errUsage, *publicIP, err)
		}
		o.PublicIP = a
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	switch {
	case f.kube.Enabled:
		node, networks, err := kubeTeardown(ctx, f.kube, *keepLease)
		if err != nil {
			return err
		}
		o.Node, o.Networks = node, networks
	case !*keepLease:
		s, err := f.store()
		if err != nil {
			return err
		}
		defer s.Close()
		o.Leases = s
	}
	rep, err := teardown.Run(ctx, o)
	if rep != nil {
		switch {
		case f.kube.Enabled && o.Node == nil:
			fmt.Fprintf(stdout, "Kubernetes mode: the Node's lease annotations kept (-keep-lease)\n")
		case f.kube.Enabled && rep.Node != "":
			fmt.Fprintf(stdout, "Kubernetes mode: lease annotations removed from Node %s (peers drop this node)\n", rep.Node)
			fmt.Fprintf(stdout, "podCIDR kept:    %s (Node %s's, owned by kube-controller-manager: not released; kubectl delete node %s frees it)\n", orNone(rep.PodCIDRs), rep.Node, rep.Node)
		case f.kube.Enabled:
			fmt.Fprintf(stdout, "Kubernetes mode: the Node's lease annotations were not removed (see the error below)\n")
		default:
			fmt.Fprintf(stdout, "released leases: %s\n", orNone(rep.Released))
		}
		fmt.Fprintf(stdout, "deleted links:   %s\n", orNone(rep.Links))
		fmt.Fprintf(stdout, "deleted routes:  %s\n", orNone(rep.Routes))
		fmt.Fprintf(stdout, "iptables chains removed: %t\nnftables tables removed: %t\nsubnet.env removed: %t\n", rep.IPTables, rep.NFTables, rep.EnvFile)
	}
	return err
}

// kubeTeardown returns, in Kubernetes mode, the node's Node (nil with
// keepLease) and the networks of net-conf.json (nil when it cannot be
// read: subnet.env names them too).
func kubeTeardown(ctx context.Context, kf kubeflags.Flags, keepLease bool) (teardown.Node, []netip.Prefix, error) {
	var networks []netip.Prefix
	if cfg, err := kube.ReadNetConf(kf.NetConfPath, slog.New(slog.DiscardHandler)); err == nil {
		for _, n := range []netip.Prefix{cfg.Network, cfg.IPv6Network} {
			if n.IsValid() {
				networks = append(networks, n)
			}
		}
	}
	if keepLease {
		return nil, networks, nil
	}
	api, host, err := kubeAPI(kf, "weft/"+version.String())
	if err != nil {
		return nil, nil, fmt.Errorf("%w (give -keep-lease to remove only what is on this machine)", err)
	}
	name, err := kube.NodeName(ctx, api, os.Getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (apiserver %s; give -keep-lease to remove only what is on this machine)", err, host)
	}
	return teardown.KubeNode{API: api, Annotations: kf.Annotations(), NodeName: name}, networks, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
