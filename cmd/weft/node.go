package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/ops/teardown"
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
	subnetFile := fs.String("subnet-file", subnetenv.DefaultPath, "weftd's subnet.env, which names this node's subnet")
	publicIP := fs.String("public-ip", "", "release the lease only if it still advertises this address (default: the address in the lease is not checked)")
	keepLease := fs.Bool("keep-lease", false, "leave the lease in etcd (remove only what is on this machine)")
	keepIPT := fs.Bool("keep-iptables", false, "leave the firewall rules in place (the FLANNEL-POSTRTG and FLANNEL-FWD chains, the flannel-ipv4 and flannel-ipv6 nftables tables)")
	setUsage(fs, "weft node teardown [flags]\n\nRemoves what weftd programmed on this node (the flannel.<VNI> and\nflannel-v6.<VNI> devices with their routes, neighbours and FDB entries, the flannel-wg device, host-gw routes, iptables chains, nftables tables, subnet.env)\nand releases its lease. Stop weftd first, or it puts everything back.")
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
	if *publicIP != "" {
		a, err := netip.ParseAddr(*publicIP)
		if err != nil {
			return fmt.Errorf("%w: -public-ip %q: %v", errUsage, *publicIP, err)
		}
		o.PublicIP = a
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if !*keepLease {
		s, err := f.store()
		if err != nil {
			return err
		}
		defer s.Close()
		o.Leases = s
	}
	rep, err := teardown.Run(ctx, o)
	if rep != nil {
		fmt.Fprintf(stdout, "released leases: %s\n", orNone(rep.Released))
		fmt.Fprintf(stdout, "deleted links:   %s\n", orNone(rep.Links))
		fmt.Fprintf(stdout, "deleted routes:  %s\n", orNone(rep.Routes))
		fmt.Fprintf(stdout, "iptables chains removed: %t\nnftables tables removed: %t\nsubnet.env removed: %t\n", rep.IPTables, rep.NFTables, rep.EnvFile)
	}
	return err
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
