package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/etcdflags"
	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/internal/kubeflags"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet/kube"
)

// runLab runs `weft lab up|status|check|down` and the hidden helpers.
func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: weft lab up|status|check|doctor|down [flags]")
		return fmt.Errorf("%w: missing lab command", errUsage)
	}
	verb, args := args[0], args[1:]
	if verb == "etcd" {
		return runLabEtcd(ctx, args, stderr)
	}
	fs := flag.NewFlagSet("weft lab "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := lab.Options{Out: stdout}
	var network, ipv6Network string
	var ipv6Only, dualStack bool
	var doctorJSON, doctorPeers bool
	fs.StringVar(&o.StateDir, "state-dir", lab.DefaultStateDir, "the lab's state dir (for tests)")
	fs.StringVar(&o.Prefix, "prefix", lab.DefaultPrefix, "prefix of the lab's namespaces and links (for tests)")
	switch verb {
	case "up":
		fs.IntVar(&o.Hosts, "hosts", 3, "number of hosts")
		fs.IntVar(&o.Pods, "pods", 2, "pods per host")
		fs.StringVar(&o.Backend, "backend", "vxlan", "backend: vxlan, host-gw or wireguard")
		fs.StringVar(&network, "network", "10.244.0.0/16", "the cluster network")
		fs.BoolVar(&dualStack, "dual-stack", false, "lease every node an IPv4 and an IPv6 subnet (IPv6 underlay beside the IPv4 one)")
		fs.BoolVar(&ipv6Only, "ipv6", false, "an IPv6-only pod network (etcd and /readyz stay on the IPv4 underlay)")
		fs.StringVar(&ipv6Network, "ipv6-network", "fd00:10:244::/56", "the cluster's IPv6 network, with --dual-stack or --ipv6")
		fs.BoolVar(&o.NFTables, "nftables", false, "keep the hosts' firewall rules in nftables (EnableNFTables) instead of iptables")
		fs.BoolVar(&o.Kube, "kube", false, "Kubernetes mode: a kube-apiserver and kube-controller-manager allocate the podCIDRs, weftd runs with -kube-subnet-mgr")
		fs.StringVar(&o.KubeBinDir, "kube-bin-dir", "", "directory holding kube-apiserver and kube-controller-manager (default: $"+kubecp.BinDirEnv+", else built by the checkout's scripts/kube-bins.sh, else the newest build in "+kubecp.DefaultCache+")")
		fs.StringVar(&o.BinDir, "bin-dir", "", "directory holding weftd, flannel, bridge and host-local (default: weft's own directory)")
		fs.DurationVar(&o.Timeout, "timeout", time.Minute, "give up after this long")
		setUsage(fs, "weft lab up [--hosts 3] [--pods 2] [--backend vxlan|host-gw|wireguard] [--network 10.244.0.0/16] [--dual-stack | --ipv6] [--ipv6-network fd00:10:244::/56] [--nftables] [--kube [--kube-bin-dir DIR]] [--bin-dir DIR]", "state-dir", "prefix")
	case "status", "check", "down":
		setUsage(fs, "weft lab "+verb, "state-dir", "prefix")
	case "doctor":
		fs.BoolVar(&doctorJSON, "json", false, "print each report as JSON")
		fs.BoolVar(&doctorPeers, "peers", false, "also probe every peer's overlay path")
		setUsage(fs, "weft lab doctor [HOST] [--json] [--peers]   # weft doctor inside each lab host (or HOST)", "state-dir", "prefix")
	default:
		fmt.Fprintln(stderr, "usage: weft lab up|status|check|doctor|down [flags]")
		return fmt.Errorf("%w: unknown lab command %q", errUsage, verb)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if verb == "doctor" {
		return labDoctor(ctx, o, pos, doctorJSON, doctorPeers)
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: weft lab %s takes no arguments, got %q", errUsage, verb, strings.Join(pos, " "))
	}
	if o.StateDir, err = filepath.Abs(o.StateDir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	switch verb {
	case "up":
		if o.Network, err = netip.ParsePrefix(network); err != nil {
			return fmt.Errorf("%w: --network %q: %v", errUsage, network, err)
		}
		if ipv6Only && dualStack {
			return fmt.Errorf("%w: --ipv6 and --dual-stack exclude each other", errUsage)
		}
		if ipv6Only || dualStack {
			if o.IPv6Network, err = netip.ParsePrefix(ipv6Network); err != nil {
				return fmt.Errorf("%w: --ipv6-network %q: %v", errUsage, ipv6Network, err)
			}
			o.NoIPv4 = ipv6Only
		}
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding weft's own executable: %w", err)
		}
		o.Self = self
		if o.BinDir == "" {
			o.BinDir = filepath.Dir(self)
		}
		if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
			return fmt.Errorf("--bin-dir: %w", err)
		}
		if o.Kube && o.KubeBinDir == "" {
			if o.KubeBinDir, err = findKubeBins(self, stderr); err != nil {
				return err
			}
		}
		return lab.Up(ctx, o)
	case "status":
		o.KubeLeases = func(ctx context.Context, kubeconfig, netConf string) error {
			var f leaseFlags
			f.kube = kubeflags.Flags{Enabled: true, Kubeconfig: kubeconfig, NetConfPath: netConf, AnnotationPrefix: kube.DefaultAnnotationPrefix}
			return showKubeLeases(ctx, stdout, f, false)
		}
		return lab.Status(ctx, o, func(ctx context.Context, endpoint, prefix string) error {
			return showLeases(ctx, stdout, leaseFlags{Flags: etcdflags.Flags{Endpoints: endpoint, Prefix: prefix}}, false)
		})
	case "check":
		return lab.Check(ctx, o)
	default:
		return lab.Down(ctx, o)
	}
}

// runLabEtcd is the hidden `weft lab etcd`: the lab's etcd process.
func runLabEtcd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft lab etcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o lab.EtcdOptions
	var clientURLs string
	fs.StringVar(&o.StateDir, "state-dir", "", "the lab's state dir")
	fs.StringVar(&clientURLs, "client-urls", "", "comma-separated client URLs to listen on")
	fs.StringVar(&o.PeerURL, "peer-url", "", "peer URL")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	if o.StateDir == "" || clientURLs == "" || o.PeerURL == "" {
		return fmt.Errorf("%w: weft lab etcd needs --state-dir, --client-urls and --peer-url", errUsage)
	}
	o.ClientURLs = strings.Split(clientURLs, ",")
	return lab.RunEtcd(ctx, o)
}

// findKubeBins finds kube-apiserver and kube-controller-manager for
// `weft lab up --kube`: $WEFT_KUBE_BIN_DIR, else the directory the
// checkout's scripts/kube-bins.sh prints (it builds them on first use,
// with its progress on stderr; found from the working directory or from
// weft's own, e.g. bin/weft in a checkout), else the newest build in the
// cache. When none works it says what to run.
func findKubeBins(self string, progress io.Writer) (string, error) {
	if d := os.Getenv(kubecp.BinDirEnv); d != "" {
		if err := kubecp.CheckBinDir(d); err != nil {
			return "", fmt.Errorf("$%s: %w", kubecp.BinDirEnv, err)
		}
		return d, nil
	}
	wd, _ := os.Getwd()
	if script, err := kubecp.FindScript(wd, filepath.Dir(self)); err == nil {
		fmt.Fprintf(progress, "weft lab: the control plane comes from %s (the first build takes minutes)\n", script)
		return kubecp.RunScript(script, progress)
	}
	if d, ok := kubecp.Cached(kubecp.DefaultCache); ok {
		return d, nil
	}
	return "", fmt.Errorf("--kube needs kube-apiserver and kube-controller-manager, and none were found: run `bash scripts/kube-bins.sh` in a weft checkout (it builds them into %s), then run weft lab up --kube from that checkout or give --kube-bin-dir <the directory it prints>", kubecp.DefaultCache)
}

// labDoctor runs `weft lab doctor [HOST]`.
func labDoctor(ctx context.Context, o lab.Options, pos []string, asJSON, peers bool) error {
	if len(pos) > 1 {
		return fmt.Errorf("%w: weft lab doctor takes one host at most, got %q", errUsage, strings.Join(pos, " "))
	}
	host := ""
	if len(pos) == 1 {
		host = pos[0]
	}
	var err error
	if o.StateDir, err = filepath.Abs(o.StateDir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if o.Self, err = os.Executable(); err != nil {
		return fmt.Errorf("finding weft's own executable: %w", err)
	}
	var extra []string
	if asJSON {
		extra = append(extra, "--json")
	}
	if peers {
		extra = append(extra, "--peers")
	}
	code, err := lab.Doctor(ctx, o, host, extra)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}
