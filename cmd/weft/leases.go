package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/leasecli"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// leaseFlags are the flanneld-style etcd flags of `weft leases`.
type leaseFlags struct {
	endpoints, prefix         string
	caFile, certFile, keyFile string
	username, password        string
	timeout                   time.Duration
}

// register defines the flanneld-style etcd flags on fs.
func (f *leaseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoints, "etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints")
	fs.StringVar(&f.prefix, "etcd-prefix", "/coreos.com/network", "etcd prefix of the network config and leases")
	fs.StringVar(&f.caFile, "etcd-cafile", "", "SSL Certificate Authority file used to secure etcd communication")
	fs.StringVar(&f.certFile, "etcd-certfile", "", "SSL certification file used to secure etcd communication")
	fs.StringVar(&f.keyFile, "etcd-keyfile", "", "SSL key file used to secure etcd communication")
	fs.StringVar(&f.username, "etcd-username", "", "username for BasicAuth to etcd")
	fs.StringVar(&f.password, "etcd-password", "", "password for BasicAuth to etcd")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on etcd after this long")
}

// fromEnv takes the etcd flags not given on the command line from
// FLANNELD_ETCD_*, as weftd does.
func (f *leaseFlags) fromEnv(fs *flag.FlagSet) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	fs.VisitAll(func(fl *flag.Flag) {
		if !strings.HasPrefix(fl.Name, "etcd-") || set[fl.Name] {
			return
		}
		if v := os.Getenv("FLANNELD_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))); v != "" {
			_ = fs.Set(fl.Name, v)
		}
	})
}

// runLeases runs `weft leases [reserve SUBNET PUBLIC-IP | release SUBNET]`.
func runLeases(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft leases", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f leaseFlags
	var asJSON bool
	f.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts instead of a table")
	setUsage(fs, "weft leases [flags] | weft leases reserve SUBNET PUBLIC-IP | weft leases release SUBNET")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	f.fromEnv(fs)
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
		sn, err := leasecli.ParseSubnet(pos[1])
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		ip, err := netip.ParseAddr(pos[2])
		if err != nil {
			return fmt.Errorf("%w: public IP %q: %v", errUsage, pos[2], err)
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.Close()
		what, err := leasecli.Reserve(ctx, c, f.prefix, sn, ip)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s for %s\n", sn, what, ip)
		return nil
	case "release":
		if len(pos) != 2 {
			return fmt.Errorf("%w: weft leases release SUBNET", errUsage)
		}
		sn, err := leasecli.ParseSubnet(pos[1])
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.Close()
		if err := leasecli.Release(ctx, c, f.prefix, sn); err != nil {
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
	rep, err := leasecli.List(ctx, c, f.prefix)
	if err != nil {
		return fmt.Errorf("%w (endpoints %s)", err, f.endpoints)
	}
	if asJSON {
		return leasecli.RenderJSON(w, rep)
	}
	return leasecli.RenderTable(w, rep)
}

// client connects to etcd as the flags say.
func (f leaseFlags) client() (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   strings.Split(f.endpoints, ","),
		DialTimeout: 5 * time.Second,
		Username:    f.username,
		Password:    f.password,
		Logger:      zap.NewNop(),
	}
	if f.caFile != "" || f.certFile != "" || f.keyFile != "" {
		info := transport.TLSInfo{CertFile: f.certFile, KeyFile: f.keyFile, TrustedCAFile: f.caFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS (ca %q, cert %q, key %q): %w", f.caFile, f.certFile, f.keyFile, err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd at %s: %w", f.endpoints, err)
	}
	return c, nil
}
