package main

import (
	"log/slog"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/internal/agent"
	"github.com/weftnet/weft/internal/iptables"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// newStore connects to etcd as the flags say.
func newStore(o *options, log *slog.Logger, m *agent.Metrics) (*etcdstore.Store, error) {
	return etcdstore.New(etcdstore.Options{
		Endpoints:      o.endpoints(),
		Prefix:         o.etcdPrefix,
		CAFile:         o.etcdCAFile,
		CertFile:       o.etcdCertFile,
		KeyFile:        o.etcdKeyFile,
		Username:       o.etcdUsername,
		Password:       o.etcdPassword,
		TTL:            o.leaseTTL,
		Logger:         log.With("component", "etcd"),
		ValidatorFor:   registry.ValidateData,
		ObserveRequest: m.ObserveEtcd,
		OnWatchRestart: func(string) { m.WatchRestarts.Inc() },
	})
}

func lookupBackend(name string) (backend.Spec, error) { return registry.Lookup(name) }

// newFirewall returns the iptables rule keeper the flags ask for, or nil
// when they ask for no rules. When iptables cannot be found the agent runs
// without rules and says so.
func newFirewall(o *options, log *slog.Logger) agent.Firewall {
	if !o.ipMasq && !o.forwardRules {
		return nil
	}
	ipt, err := iptables.New(false)
	if err != nil {
		log.Error("iptables unavailable: masquerade and forward rules will not be kept", "err", err)
		return nil
	}
	m, err := iptables.NewManager(ipt, iptables.Config{Masq: o.ipMasq, Forward: o.forwardRules}, log.With("component", "iptables"))
	if err != nil {
		log.Error("iptables", "err", err)
		return nil
	}
	return iptables.NetworkEnsurer{M: m}
}
