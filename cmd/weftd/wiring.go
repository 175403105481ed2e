package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/kernel/nftables"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/kube"
)

// store is a subnet.Manager the agent drives and weftd closes.
type store interface {
	subnet.Manager
	Close() error
}

// newKubeStore connects to the Kubernetes API as the flags say, finds this
// node's name and starts the Kubernetes store.
func newKubeStore(ctx context.Context, o *options, log *slog.Logger, live func(bool)) (*kube.Store, error) {
	klog.SetSlogLogger(log.With("component", "client-go"))
	rc, err := kube.RESTConfig(o.kube.APIURL, o.kube.Kubeconfig, "weftd/"+version.String())
	if err != nil {
		return nil, err
	}
	cs, err := kube.NewAPI(rc)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	name, err := kube.NodeName(nctx, cs, os.Getenv)
	if err != nil {
		return nil, err
	}
	log.Info("Kubernetes mode", "node", name, "apiserver", rc.Host, "net_config", o.kube.NetConfPath)
	return kube.New(kube.Options{
		Client:                    cs,
		NodeName:                  name,
		AnnotationPrefix:          o.kube.AnnotationPrefix,
		NetConfPath:               o.kube.NetConfPath,
		SetNodeNetworkUnavailable: o.setNodeNetUnavail,
		Logger:                    log.With("component", "kube"),
		ValidatorFor:              registry.ValidateData,
		OnWatchLive:               live,
	})
}

// newStore connects to etcd as the flags say.
func newStore(o *options, log *slog.Logger, m *agent.Metrics, live func(bool)) (*etcdstore.Store, error) {
	opts := o.etcd.StoreOptions(0)
	opts.TTL = o.leaseTTL
	opts.Logger = log.With("component", "etcd")
	opts.ValidatorFor = registry.ValidateData
	opts.ObserveRequest = m.ObserveEtcd
	opts.OnWatchRestart = func(string) { m.WatchRestarts.Inc() }
	opts.OnWatchLive = live
	// The agent reads the config, then looks up and acquires its lease:
	// one listing, read with the config, serves all three.
	opts.PrefetchLeases = true
	return etcdstore.New(opts)
}

func lookupBackend(name string) (backend.Spec, error) { return registry.Lookup(name) }

// openFirewall returns a function that opens the firewall of a mode on
// this host (iptables, or nftables through the nft command).
func openFirewall(log *slog.Logger) func(firewall.Mode) (firewall.Firewall, error) {
	return func(m firewall.Mode) (firewall.Firewall, error) {
		l := log.With("component", string(m))
		if m == firewall.NFTables {
			return nftables.New(l)
		}
		return iptables.NewFirewall(l)
	}
}
