// Command weftd is Weft's node agent: it leases a subnet for this node in
// etcd, programs the overlay toward every peer, writes subnet.env for the CNI
// plugin and keeps its firewall rules (iptables or nftables). Its flags are flanneld's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/internal/heaplimit"
	"github.com/weftnet/weft/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	o, err := parseOptions(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weftd: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	if o.version {
		fmt.Println("weftd", version.String())
		return 0
	}
	log := o.logger()
	log.Info("starting weftd", "version", version.String())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	metrics := agent.NewMetrics()
	var ag atomic.Pointer[agent.Agent]
	live := func(live bool) {
		if a := ag.Load(); a != nil {
			a.SetWatchLive(live)
		}
	}
	var publicIP netip.Addr
	if o.node.PublicIP != "" {
		publicIP = netip.MustParseAddr(o.node.PublicIP) // checked by parseOptions
	}
	publicIPv6 := o.node.PublicV6()
	var st store
	storeName := "etcd"
	if o.kube.Enabled {
		if len(o.etcdGiven) > 0 {
			log.Warn("Kubernetes mode: ignoring the etcd flags given", "flags", o.etcdGiven)
		}
		ks, err := newKubeStore(ctx, o, log, live)
		if err != nil {
			log.Error("starting the Kubernetes store", "err", err)
			return 1
		}
		st, storeName = ks, "the Kubernetes apiserver"
		// As flanneld: the Node's node-public-ip annotation, when an
		// operator set it, wins over -public-ip.
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v4, v6, err := ks.NodePublicIP(nctx)
		cancel()
		if err != nil {
			log.Warn("cannot read this node's node-public-ip annotations; using -public-ip/-public-ipv6 or the interface's address", "err", err)
		}
		if v4.IsValid() {
			log.Info("public IP from the node's annotation", "annotation", ks.Annotations().NodePublicIP, "public_ip", v4)
			publicIP = v4
		}
		if v6.IsValid() {
			log.Info("public IPv6 from the node's annotation", "annotation", ks.Annotations().NodePublicIPv6, "public_ipv6", v6)
			publicIPv6 = v6
		}
	} else {
		es, err := newStore(o, log, metrics, live)
		if err != nil {
			log.Error("connecting to etcd", "err", err)
			return 1
		}
		st = es
	}
	defer st.Close()

	a, err := agent.New(agent.Options{
		Manager:        st,
		StoreName:      storeName,
		Backends:       lookupBackend,
		Iface:          agent.IfaceOptions{Ifaces: o.node.Ifaces, Regexes: o.node.IfaceRegexes, PublicIP: publicIP, PublicIPv6: publicIPv6},
		SubnetFile:     o.node.SubnetFile,
		RenewMargin:    time.Duration(o.renewMargin) * time.Minute,
		LeaseTTL:       o.leaseTTL,
		IPMasq:         o.node.IPMasq,
		ForwardRules:   o.node.ForwardRules,
		Firewall:       openFirewall(log),
		FirewallResync: time.Duration(o.iptablesResync) * time.Second,
		Resync:         o.resync,
		SteadyProcs:    steadyProcs(os.Getenv),
		Log:            log,
		Metrics:        metrics,
		// Once every peer is programmed, the heap grows by a quarter of
		// what it holds (at least 4 MiB) between collections rather than
		// doubling: with 20,000 peers that is some 30 MB less resident
		// memory while leases stream in. (GOMEMLIMIT, when set, wins.)
		OnReady: func() { heaplimit.Follow(heaplimit.Policy{Fraction: 0.25, Floor: 4 << 20}) },
	})
	if err != nil {
		log.Error("configuring the agent", "err", err)
		return 1
	}
	ag.Store(a)
	if addr := o.healthzAddr(); addr != "" {
		go func() {
			if err := a.ServeHealth(ctx, addr, log); err != nil {
				log.Error("health server stopped", "err", err)
			}
		}()
	}
	if err := a.Run(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the agent was ready", "err", err)
			return 0
		}
		log.Error("weftd failed", "err", err)
		return 1
	}
	return 0
}

// steadyProcs is agent.Options.SteadyProcs: one P once ready, unless
// GOMAXPROCS in the environment says otherwise (then the runtime's own
// reading of it stands).
func steadyProcs(getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return 0
	}
	return 1
}
