package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/weftnet/weft/internal/etcdflags"
	"github.com/weftnet/weft/internal/kubeflags"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/ops/leases"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/kube"
)

// leaseFlags are the flanneld-style etcd flags of the commands that talk to
// etcd, and how long to wait for it.
type leaseFlags struct {
	etcdflags.Flags
	timeout time.Duration
	// kube are weftd's Kubernetes-mode flags, for a cluster whose leases
	// are Nodes.
	kube kubeflags.Flags
}

// registerKube defines weftd's Kubernetes-mode flags on fs.
func (f *leaseFlags) registerKube(fs *flag.FlagSet) { f.kube.Register(fs) }

// kubeAPI returns a client of the apiserver the Kubernetes-mode flags name.
// A person at a shell has $KUBECONFIG where weftd has its in-cluster
// config: it stands in for -kubeconfig-file when neither it nor
// -kube-api-url is given.
func (f *leaseFlags) kubeAPI(userAgent string) (kube.API, string, error) {
	return kubeAPI(f.kube, userAgent)
}

// kubeAPI is leaseFlags.kubeAPI for any command with the Kubernetes-mode
// flags.
func kubeAPI(kf kubeflags.Flags, userAgent string) (kube.API, string, error) {
	if kf.Kubeconfig == "" && kf.APIURL == "" {
		kf.Kubeconfig = os.Getenv("KUBECONFIG")
	}
	return kf.API(userAgent)
}

// register defines the etcd flags and -timeout on fs.
func (f *leaseFlags) register(fs *flag.FlagSet) {
	f.Register(fs)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on etcd after this long")
}

// fromEnv takes the etcd flags not given on the command line from
// FLANNELD_ETCD_*, as weftd does.
func (f *leaseFlags) fromEnv(fs *flag.FlagSet) error {
	keep := func(name string) bool { return etcdflags.IsEtcdFlag(name) || kubeflags.IsKubeFlag(name) }
	if err := etcdflags.FromEnv(fs, os.Getenv, keep); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.kube.Check(); err != nil {
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
	f.registerKube(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts instead of a table")
	setUsage(fs, "weft leases [flags] | weft leases reserve SUBNET[,IPV6-SUBNET] PUBLIC-IP[,PUBLIC-IPV6] | weft leases release SUBNET")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := f.fromEnv(fs); err != nil {
		return err
	}
	if f.kube.Enabled {
		if len(pos) > 0 {
			return fmt.Errorf("%w: weft leases %s: in Kubernetes mode a node's subnet is its podCIDR, assigned by kube-controller-manager; there is nothing to reserve or release", errUsage, pos[0])
		}
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		return showKubeLeases(ctx, stdout, f, asJSON)
	}
	op, err := leasesOp(pos, stdout, f, asJSON)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return f.withStore(ctx, op)
}

// showLeases prints the leases as a table or JSON.
func showLeases(ctx context.Context, w io.Writer, f leaseFlags, asJSON bool) error {
	op, err := leasesOp(nil, w, f, asJSON)
	if err != nil {
		return err
	}
	return f.withStore(ctx, op)
}

// withStore runs op on the lease store the flags name.
func (f leaseFlags) withStore(ctx context.Context, op func(context.Context, *etcd.Store) error) error {
	s, err := f.store()
	if err != nil {
		return err
	}
	defer s.Close()
	return op(ctx, s)
}

// leasesOp checks the positional arguments of `weft leases` and returns
// what to do with the store.
func leasesOp(pos []string, stdout io.Writer, f leaseFlags, asJSON bool) (func(context.Context, *etcd.Store) error, error) {
	if len(pos) == 0 {
		return func(ctx context.Context, s *etcd.Store) error {
			rep, err := leases.List(ctx, s)
			if err != nil {
				return fmt.Errorf("%w (endpoints %s)", err, f.Endpoints)
			}
			if asJSON {
				return leases.RenderJSON(stdout, rep)
			}
			return leases.RenderTable(stdout, rep)
		}, nil
	}
	want := map[string]int{"reserve": 3, "release": 2}[pos[0]]
	switch {
	case want == 0:
		return nil, fmt.Errorf("%w: unknown leases command %q (want reserve or release)", errUsage, pos[0])
	case len(pos) != want && pos[0] == "reserve":
		return nil, fmt.Errorf("%w: weft leases reserve SUBNET PUBLIC-IP", errUsage)
	case len(pos) != want:
		return nil, fmt.Errorf("%w: weft leases release SUBNET", errUsage)
	}
	sns, err := leases.ParseSubnets(pos[1])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if pos[0] == "release" {
		if sns.V4.IsValid() && sns.V6.IsValid() {
			return nil, fmt.Errorf("%w: weft leases release SUBNET takes one subnet of either family (the key holding it goes)", errUsage)
		}
		sn := cmp.Or(sns.V4, sns.V6)
		return func(ctx context.Context, s *etcd.Store) error {
			if err := s.DeleteSubnet(ctx, sn); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: released\n", sn)
			return nil
		}, nil
	}
	ip, ip6, err := leases.ParseAddrs(pos[2])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return func(ctx context.Context, s *etcd.Store) error {
		what, err := s.ReserveSubnets(ctx, sns.V4, sns.V6, ip, ip6)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s for %s\n", sns, what, pos[2])
		return nil
	}, nil
}

// store connects to the lease store as the flags say.
func (f leaseFlags) store() (*etcd.Store, error) { return leases.Open(f.StoreOptions(5 * time.Second)) }

// showKubeLeases prints the leases of a Kubernetes-mode cluster.
func showKubeLeases(ctx context.Context, w io.Writer, f leaseFlags, asJSON bool) error {
	api, host, err := f.kubeAPI("weft/" + version.String())
	if err != nil {
		return err
	}
	var cfg *subnet.Config
	if _, statErr := os.Stat(f.kube.NetConfPath); statErr == nil {
		if cfg, err = kube.ReadNetConf(f.kube.NetConfPath, slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
	}
	rep, err := leases.ListKube(ctx, api, f.kube.Annotations(), cfg)
	if err != nil {
		return fmt.Errorf("%w (apiserver %s)", err, host)
	}
	if asJSON {
		return leases.RenderJSON(w, rep)
	}
	return leases.RenderTable(w, rep)
}
