package main

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/kernel/iptables"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// newStore connects to etcd as the flags say.
func newStore(o *options, log *slog.Logger, m *agent.Metrics, live func(bool)) (*etcdstore.Store, error) {
	return etcdstore.New(etcdstore.Options{
		Endpoints:      o.endpoints(),
		Prefix:         o.etcd.Prefix,
		CAFile:         o.etcd.CAFile,
		CertFile:       o.etcd.CertFile,
		KeyFile:        o.etcd.KeyFile,
		Username:       o.etcd.Username,
		Password:       o.etcd.Password,
		TTL:            o.leaseTTL,
		Logger:         log.With("component", "etcd"),
		ValidatorFor:   registry.ValidateData,
		ObserveRequest: m.ObserveEtcd,
		OnWatchRestart: func(string) { m.WatchRestarts.Inc() },
		OnWatchLive:    live,
	})
}

func lookupBackend(name string) (backend.Spec, error) { return registry.Lookup(name) }

// newFirewall returns the iptables rule keeper the flags ask for, or nil
// when they ask for no rules. When iptables cannot be found the agent runs
// without rules and says so.
func newFirewall(o *options, log *slog.Logger) agent.Firewall {
	if !o.node.IPMasq && !o.node.ForwardRules {
		return nil
	}
	ipt, err := iptables.New(false)
	if err != nil {
		log.Error("iptables unavailable: masquerade and forward rules will not be kept", "err", err)
		return nil
	}
	return &lazyFirewall{ipt: ipt, masq: o.node.IPMasq, fwd: o.node.ForwardRules, log: log.With("component", "iptables")}
}

// lazyFirewall creates the iptables manager on the first Ensure, when the
// network and the node's subnet are known.
type lazyFirewall struct {
	ipt       iptables.IPTables
	masq, fwd bool
	log       *slog.Logger
	m         *iptables.Manager
}

func (f *lazyFirewall) Ensure(ctx context.Context, network, own netip.Prefix) error {
	if f.m == nil {
		m, err := iptables.NewManager(f.ipt, iptables.Config{Network: network, Subnet: own, Masq: f.masq, Forward: f.fwd}, f.log)
		if err != nil {
			return err
		}
		f.m = m
	}
	return iptables.NetworkEnsurer{M: f.m}.Ensure(ctx, network, own)
}
