package main

import (
	"log/slog"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/kernel/nftables"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// newStore connects to etcd as the flags say.
func newStore(o *options, log *slog.Logger, m *agent.Metrics, live func(bool)) (*etcdstore.Store, error) {
	opts := o.etcd.StoreOptions(0)
	opts.TTL = o.leaseTTL
	opts.Logger = log.With("component", "etcd")
	opts.ValidatorFor = registry.ValidateData
	opts.ObserveRequest = m.ObserveEtcd
	opts.OnWatchRestart = func(string) { m.WatchRestarts.Inc() }
	opts.OnWatchLive = live
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
