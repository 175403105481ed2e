package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/internal/etcdflags"
	"github.com/weftnet/weft/internal/kubeflags"
	"github.com/weftnet/weft/internal/nodeflags"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/kernel/nftables"
	"github.com/weftnet/weft/ops/doctor"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// exitCode is an error that carries the process's exit code (weft doctor's
// 1 for a problem, 2 for a check that could not look) after the command
// has printed its own report.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// doctorFlags are weft doctor's own flags beside weftd's.
type doctorFlags struct {
	etcd         etcdflags.Flags
	kube         kubeflags.Flags
	node         nodeflags.Flags
	json, peers  bool
	probeTimeout time.Duration
	cniCache     string
	ipamDir      string
	bridge       string
}

func (d *doctorFlags) register(fs *flag.FlagSet) {
	d.etcd.Register(fs)
	d.kube.Register(fs)
	d.node.Register(fs)
	fs.BoolVar(&d.json, "json", false, "print the report as JSON")
	fs.BoolVar(&d.peers, "peers", false, "also probe every peer's overlay path (one ICMP echo to the first address of its subnet)")
	fs.DurationVar(&d.probeTimeout, "probe-timeout", time.Second, "how long --peers waits for each echo reply")
	fs.StringVar(&d.cniCache, "cni-cache-dir", "/var/lib/cni/cache", "libcni's cache directory (the runtime's), where each attachment's network namespace is recorded")
	fs.StringVar(&d.ipamDir, "cni-ipam-dir", "/var/lib/cni/networks", "host-local's data directory")
	fs.StringVar(&d.bridge, "bridge", "cni0", "the CNI bridge")
}

// options turns flags into doctor options (the store is opened by the
// caller).
func (d *doctorFlags) options() doctor.Options {
	o := doctor.Options{
		Backends:     registry.Lookup,
		Iface:        agent.IfaceOptions{Ifaces: d.node.Ifaces, Regexes: d.node.IfaceRegexes, PublicIP: d.node.Public(), PublicIPv6: d.node.PublicV6()},
		SubnetFile:   d.node.SubnetFile,
		IPMasq:       d.node.IPMasq,
		ForwardRules: d.node.ForwardRules,
		HealthzURL:   d.node.HealthzURL(),
		Bridge:       d.bridge,
		CNICacheDir:  d.cniCache,
		IPAMDir:      d.ipamDir,
		Peers:        d.peers,
		ProbeTimeout: d.probeTimeout,
	}
	if ipt, err := iptables.New(firewall.IPv4); err == nil {
		o.Firewall = doctor.IPTablesChecker{IPT: ipt, Masq: d.node.IPMasq, Forward: d.node.ForwardRules}
	}
	if nft, err := nftables.New(nil); err == nil {
		o.NFTables = nft
	}
	return o
}

// kubeStore returns the doctor's store in Kubernetes mode. A client that
// cannot be made (an unreadable kubeconfig, no in-cluster config) is the
// store check's to report, as a check that could not look.
func (d *doctorFlags) kubeStore() doctor.KubeStore {
	api, host, err := kubeAPI(d.kube, "weft-doctor/"+version.String())
	return doctor.KubeStore{
		API: api, APIErr: err, Host: host,
		Annotations: d.kube.Annotations(),
		NetConfPath: d.kube.NetConfPath,
		Getenv:      os.Getenv,
		Validate:    registry.ValidateData,
	}
}

// runDoctor runs `weft doctor`: the checks of ops/doctor on this node,
// with weftd's flags (and FLANNELD_* variables) saying where to look.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var d doctorFlags
	d.register(fs)
	setUsage(fs, "weft doctor [--json] [--peers] [weftd's flags: -etcd-endpoints, -iface, -public-ip, -subnet-file, -healthz-port, ...]\n"+
		"weft doctor -kube-subnet-mgr [-kubeconfig-file F | -kube-api-url U] [-net-config-path P] [weftd's other flags]   (with NODE_NAME, as weftd)\n\n"+
		"exit status: 0 healthy, 1 a problem found, 2 a check could not look")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: weft doctor takes flags only, got %q", errUsage, strings.Join(pos, " "))
	}
	if err := etcdflags.FromEnv(fs, os.Getenv, func(name string) bool {
		return etcdflags.IsEtcdFlag(name) || kubeflags.IsKubeFlag(name) || nodeflags.IsNodeFlag(name)
	}); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if d.kube.Enabled {
		if err := d.kube.Check(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	} else if err := d.etcd.Check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := d.node.Check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if d.probeTimeout <= 0 {
		return fmt.Errorf("%w: --probe-timeout %s must be positive", errUsage, d.probeTimeout)
	}
	o := d.options()
	if d.kube.Enabled {
		o.Store = d.kubeStore()
	} else {
		so := d.etcd.StoreOptions(3 * time.Second)
		so.BackoffMax = time.Second
		so.ValidatorFor = registry.ValidateData
		so.Logger = slog.New(slog.DiscardHandler)
		store, err := etcdstore.New(so)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		defer store.Close()
		o.Store = doctor.EtcdStore{S: store}
	}
	rep := doctor.Run(ctx, o)
	render := doctor.RenderText
	if d.json {
		render = doctor.RenderJSON
	}
	if err := render(stdout, rep); err != nil {
		return err
	}
	if c := rep.ExitCode(); c != 0 {
		return exitCode(c)
	}
	return nil
}
