package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/etcdflags"
	"github.com/weftnet/weft/ops/leases"
)

// leaseFlags are the flanneld-style etcd flags of the commands that talk to
// etcd, and how long to wait for it.
type leaseFlags struct {
	etcdflags.Flags
	timeout time.Duration
}

// register defines the etcd flags and -timeout on fs.
func (f *leaseFlags) register(fs *flag.FlagSet) {
	f.Register(fs)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on etcd after this long")
}

// fromEnv takes the etcd flags not given on the command line from
// FLANNELD_ETCD_*, as weftd does.
func (f *leaseFlags) fromEnv(fs *flag.FlagSet) error {
	if err := etcdflags.FromEnv(fs, os.Getenv, etcdflags.IsEtcdFlag); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// runLeases runs `weft leases [reserve SUBNET PUBLIC-IP | release SUBNET]`.
func runLeases(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft leases", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f leaseFlags
	var asJSON bool
	f.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts instead of a table")
	setUsage(fs, "weft leases [flags] | weft leases reserve SUBNET[,IPV6-SUBNET] PUBLIC-IP[,PUBLIC-IPV6] | weft leases release SUBNET")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := f.fromEnv(fs); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if len(pos) == 0 {
		return showLeases(ctx, stdout, f, asJSON)
	}
	switch pos[0] {
	case "reserve":
		if len(pos) != 3 {
			return fmt.Errorf("%w: weft leases reserve SUBNET PUBLIC-IP", errUsage)
		}
		sn, err := leases.ParseSubnets(pos[1])
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		ip, ip6, err := leases.ParseAddrs(pos[2])
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.Close()
		what, err := leases.ReserveSubnets(ctx, c, f.Prefix, sn, ip, ip6)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s for %s\n", sn, what, pos[2])
		return nil
	case "release":
		if len(pos) != 2 {
			return fmt.Errorf("%w: weft leases release SUBNET", errUsage)
		}
		sns, err := leases.ParseSubnets(pos[1])
		if err != nil || (sns.V4.IsValid() && sns.V6.IsValid()) {
			return fmt.Errorf("%w: weft leases release SUBNET takes one subnet of either family (the key holding it goes)", errUsage)
		}
		sn := sns.V4
		if !sn.IsValid() {
			sn = sns.V6
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.Close()
		if err := leases.Release(ctx, c, f.Prefix, sn); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: released\n", sn)
		return nil
	}
	return fmt.Errorf("%w: unknown leases command %q (want reserve or release)", errUsage, pos[0])
}

// showLeases prints the leases as a table or JSON.
func showLeases(ctx context.Context, w io.Writer, f leaseFlags, asJSON bool) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := leases.List(ctx, c, f.Prefix)
	if err != nil {
		return fmt.Errorf("%w (endpoints %s)", err, f.Endpoints)
	}
	if asJSON {
		return leases.RenderJSON(w, rep)
	}
	return leases.RenderTable(w, rep)
}

// client connects to etcd as the flags say.
func (f leaseFlags) client() (*clientv3.Client, error) { return f.Client(5 * time.Second) }
