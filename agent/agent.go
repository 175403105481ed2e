// Package agent is the node agent's lifecycle: choose the external interface,
// read the network config, lease a subnet and keep it, start the backend,
// write subnet.env, keep the firewall rules (iptables or nftables), fold lease events into peer sets
// for the backend, and serve health and metrics. It owns every goroutine it
// starts; when its context ends it stops them and leaves the data plane in
// place, so that a restarted agent picks it up without dropping traffic.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/internal/logonce"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// Options configure the agent. Manager and Backends are required.
type Options struct {
	// Manager leases and watches subnets (the etcd or Kubernetes store).
	Manager subnet.Manager
	// StoreName names the store in readiness reasons and logs ("etcd"
	// when empty, "the Kubernetes apiserver" in Kubernetes mode).
	StoreName string
	// Backends looks a backend up by type name (the backend registry).
	Backends func(name string) (backend.Spec, error)
	// Iface chooses the external interface.
	Iface IfaceOptions
	// External, if set, is the external interface to use, and Iface is not
	// consulted (tests give the interface of a fake netlink).
	External *backend.ExternalInterface
	// IPForwardFile is the sysctl file through which the agent turns IPv4
	// forwarding on (default /proc/sys/net/ipv4/ip_forward).
	IPForwardFile string
	// IPv6ForwardFile is the same for IPv6, with IPv6 on (default
	// /proc/sys/net/ipv6/conf/all/forwarding).
	IPv6ForwardFile string
	// SubnetFile is where subnet.env is written.
	SubnetFile string
	// RenewMargin: the lease is refreshed when less than this is left.
	RenewMargin time.Duration
	// LeaseTTL is the etcd lease's TTL (0: the store's default, 24 h).
	LeaseTTL time.Duration
	// IPMasq says whether the masquerade rules are wanted (FLANNEL_IPMASQ).
	IPMasq bool
	// ForwardRules says whether the forward rules are wanted
	// (-iptables-forward-rules).
	ForwardRules bool
	// Firewall opens the firewall of a mode; the network config's
	// EnableNFTables chooses the mode, and the other mode's rules are
	// removed once the chosen one's are in place. A mode whose command is
	// missing returns an error wrapping firewall.ErrNotInstalled. nil keeps
	// no rules.
	Firewall func(firewall.Mode) (firewall.Firewall, error)
	// FirewallResync is how often the rules are checked and restored.
	FirewallResync time.Duration
	// Resync is how often the backend compares the kernel with the desired
	// state even without events (default 10 s).
	Resync time.Duration
	// Coalesce is how long, while lease changes keep arriving, the agent
	// gathers them into one Set: once streamMin Sets in a row each followed
	// the one before within Coalesce, the next waits until Coalesce after
	// the last one ended, taking every change that arrived meanwhile. A
	// change after a quiet Coalesce goes to the backend at once. 0 means
	// DefaultCoalesce; negative, never wait.
	Coalesce time.Duration
	// SteadyProcs, when positive, is the GOMAXPROCS the agent sets once it
	// is first ready, when its backend's data plane is the kernel's
	// (backend.EngineOf "kernel"; a userspace engine encrypts in this
	// process and keeps every CPU). From then on its work is one pipeline
	// of small steps (a watch response decoded, a Set, its netlink writes)
	// handed from goroutine to goroutine, and with more than one P each
	// hand-off wakes another thread: a stream of leases written one by one
	// cost about a third more CPU with 2 Ps than with 1 (BenchmarkStream4000).
	// A goroutine blocked in a syscall (a slow route write) still lets the
	// others run, on another thread. The price: on a machine whose CPUs are
	// all busy, one thread gets one share of them, and the agent falls
	// further behind a stream (bench/PROFILES.md). Start-up, before ready,
	// keeps the runtime's default. 0 leaves GOMAXPROCS alone.
	SteadyProcs int
	// Log receives the agent's log lines.
	Log *slog.Logger
	// Metrics, if not nil, is updated as the agent works.
	Metrics *Metrics
	// OnReady, if not nil, is called once when the agent is first ready.
	OnReady func()
}

// Agent is a running node agent. Use Run.
type Agent struct {
	o   Options
	log *slog.Logger
	m   *Metrics

	cfg *subnet.Config
	ext backend.ExternalInterface
	be  backend.Backend
	fw  *firewall.Keeper // nil without a firewall

	mu  sync.Mutex
	own subnet.Lease

	ready     atomic.Bool
	readyErr  atomic.Pointer[string]
	watchDown atomic.Bool

	syncs sync.WaitGroup // subnet.env's fsyncs in flight
}

// SetWatchLive records whether the lease watch follows etcd; while it does
// not, the agent reports not ready (its peer set may be stale).
func (a *Agent) SetWatchLive(live bool) { a.watchDown.Store(!live) }

// Ready reports whether the agent holds its lease, has written subnet.env,
// has programmed every known peer and has a live watch; if not, the reason.
func (a *Agent) Ready() (bool, string) {
	if a.ready.Load() {
		if a.watchDown.Load() {
			return false, "the lease watch lost " + a.o.StoreName + " and is reconnecting"
		}
		return true, ""
	}
	if p := a.readyErr.Load(); p != nil {
		return false, *p
	}
	return false, "starting"
}

func (a *Agent) notReady(reason string) {
	a.ready.Store(false)
	a.readyErr.Store(&reason)
}

// New checks the options and returns an agent ready to Run.
func New(o Options) (*Agent, error) {
	if o.Manager == nil || o.Backends == nil {
		return nil, errors.New("agent: Manager and Backends are required")
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	if o.StoreName == "" {
		o.StoreName = "etcd"
	}
	if o.IPForwardFile == "" {
		o.IPForwardFile = ipForwardPath
	}
	if o.IPv6ForwardFile == "" {
		o.IPv6ForwardFile = ipv6ForwardPath
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Second
	}
	if o.Coalesce == 0 {
		o.Coalesce = DefaultCoalesce
	}
	if o.FirewallResync <= 0 {
		o.FirewallResync = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	return &Agent{o: o, log: o.Log, m: o.Metrics}, nil
}

// Run runs the agent until ctx ends. It returns nil after a clean stop, or
// the error that kept it from starting.
func (a *Agent) Run(ctx context.Context) error {
	start := time.Now()
	defer a.syncs.Wait()
	a.notReady("waiting for the network config from " + a.o.StoreName)
	cfg, err := a.o.Manager.GetNetworkConfig(ctx)
	if err != nil {
		return fmt.Errorf("reading the network config: %w", err)
	}
	a.cfg = cfg
	a.log.Info("network config", "ipv4", cfg.EnableIPv4, "network", cfg.Network, "subnet_len", cfg.SubnetLen,
		"subnet_min", cfg.SubnetMin, "subnet_max", cfg.SubnetMax, "ipv6", cfg.EnableIPv6, "ipv6_network", cfg.IPv6Network,
		"ipv6_subnet_len", cfg.IPv6SubnetLen, "backend", cfg.BackendType)

	// As flanneld, the interface is chosen once the config says which
	// families it needs an address of.
	a.notReady("choosing the external interface")
	var ext backend.ExternalInterface
	if a.o.External != nil {
		ext = *a.o.External
	} else if ext, err = chooseExternal(a.o.Iface, cfg.EnableIPv4, cfg.EnableIPv6); err != nil {
		return err
	}
	a.ext = ext
	a.log.Info("using interface", "iface", ext.Name, "addr", ext.Addr, "public_ip", ext.PublicIP,
		"addr6", ext.Addr6, "public_ipv6", ext.PublicIPv6, "mtu", ext.MTU)

	spec, err := a.o.Backends(cfg.BackendType)
	if err != nil {
		return fmt.Errorf("network config: %w", err)
	}
	// The backend adopts or creates its device before the lease is taken,
	// and LeaseAttrs then advertises the device as it is (its MAC). A
	// backend that must create its device afresh may take its identity from
	// the lease the store still holds for this node (the one AcquireLease
	// below takes back), so that peers need change nothing after a reboot.
	previous := func(ctx context.Context) (*subnet.Lease, error) {
		// Bounded: a store that stops answering now costs the node its
		// old MAC (peers follow the rewritten lease), not its start.
		ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
		return a.o.Manager.LookupLease(ctx, cfg, nodeAddr(cfg, ext))
	}
	be, err := spec.New(ctx, backend.Params{Config: cfg, Ext: ext, Previous: previous, Log: a.log.With("backend", cfg.BackendType)})
	if err != nil {
		return fmt.Errorf("starting the %s backend: %w", cfg.BackendType, err)
	}
	a.be = be
	engine := backend.EngineOf(be)
	a.m.BackendInfo.Reset()
	a.m.BackendInfo.WithLabelValues(be.Type(), engine).Set(1)
	a.log.Info("backend started", "backend", be.Type(), "engine", engine, "mtu", be.MTU())
	defer func() {
		if err := be.Close(); err != nil {
			a.log.Warn("closing the backend", "err", err)
		}
	}()

	attrs := subnet.LeaseAttrs{PublicIP: ext.PublicIP}
	if ext.PublicIPv6.IsValid() {
		v6 := ext.PublicIPv6
		attrs.PublicIPv6 = &v6
	}
	if err := be.LeaseAttrs(&attrs); err != nil {
		return fmt.Errorf("backend %s: lease attributes: %w", cfg.BackendType, err)
	}

	a.notReady("acquiring a subnet lease")
	lease, err := a.acquire(ctx, attrs)
	if err != nil {
		return fmt.Errorf("acquiring a subnet lease: %w", err)
	}
	if a.o.StoreName == "etcd" {
		a.log.Info("lease acquired", "subnet", lease.Subnet, "ipv6_subnet", lease.IPv6Subnet, "public_ip", lease.Attrs.PublicIP,
			"public_ipv6", lease.Attrs.IPv6(), "reserved", lease.Reserved())
	} else {
		a.log.Info("lease acquired", "subnet", lease.Subnet, "ipv6_subnet", lease.IPv6Subnet, "public_ip", lease.Attrs.PublicIP,
			"public_ipv6", lease.Attrs.IPv6(), "store", a.o.StoreName)
	}
	a.setOwn(*lease)
	if err := a.writeSubnetEnv(*lease); err != nil {
		return err
	}
	a.notReady("listing the leases")

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The host's own set-up (forwarding, the firewall rules) must be done
	// before the agent reports ready, but neither the listing nor the
	// peers wait for it: it runs beside them (the iptables commands take
	// tens of milliseconds), and the keeper goes on from there.
	hostDone := make(chan struct{})
	a.openFirewall(*lease, func(error) { close(hostDone) })
	wg.Go(func() { a.setUpHost(ctx, hostDone) })

	ownCh := make(chan subnet.Lease, 1)
	evCh := make(chan []subnet.Event, 16)

	wg.Go(func() {
		err := a.o.Manager.KeepLease(ctx, cfg, lease, a.o.RenewMargin, func(l *subnet.Lease) {
			a.m.LeaseChanges.Inc()
			select {
			case <-ownCh: // replace a lease not yet taken
			default:
			}
			ownCh <- *l
		})
		if err != nil && ctx.Err() == nil {
			a.log.Error("keeping the lease stopped", "err", err)
		}
	})
	wg.Go(func() {
		err := a.o.Manager.WatchLeases(ctx, cfg, func(evs []subnet.Event) {
			select {
			case evCh <- evs:
			case <-ctx.Done():
			}
		})
		if err != nil && ctx.Err() == nil {
			a.log.Error("watching leases stopped", "err", err)
		}
	})
	wg.Go(func() {
		err := a.o.Manager.WatchConfig(ctx, cfg, func(nc *subnet.Config, err error) {
			if err != nil {
				a.log.Warn("the network config in "+a.o.StoreName+" is no longer usable; this agent keeps running with the config it started with", "err", err)
				return
			}
			a.log.Warn("the network config in "+a.o.StoreName+" changed; it takes effect when weftd restarts (running pods keep their addresses until then)",
				"network", nc.Network, "subnet_len", nc.SubnetLen, "ipv6_network", nc.IPv6Network, "backend", nc.BackendType)
		})
		if err != nil && ctx.Err() == nil {
			a.log.Warn("watching the network config stopped", "err", err)
		}
	})

	a.reconcileLoop(ctx, start, ownCh, evCh, hostDone)
	a.log.Info("stopping; the data plane and the lease stay in place")
	return nil
}

// lookupTimeout bounds the look-up of the node's previous lease at start.
const lookupTimeout = 10 * time.Second

// acquire leases a subnet, retrying with capped backoff while etcd fails or
// the network is exhausted (a lease may expire), logging once per kind of
// failure.
func (a *Agent) acquire(ctx context.Context, attrs subnet.LeaseAttrs) (*subnet.Lease, error) {
	hint, hint6 := a.previousSubnets()
	opts := subnet.AcquireOptions{Hint: hint, HintIPv6: hint6, TTL: a.o.LeaseTTL}
	wait := 100 * time.Millisecond
	var failed logonce.Errors
	for {
		lease, err := a.o.Manager.AcquireLease(ctx, a.cfg, attrs, opts)
		if err == nil {
			return lease, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if failed.Changed(err) {
			a.log.Error("cannot acquire a subnet lease yet; retrying", "err", err)
			a.notReady("acquiring a subnet lease: " + err.Error())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// previousSubnets reads the subnets recorded in an earlier subnet.env, as
// hints for AcquireLease.
func (a *Agent) previousSubnets() (v4, v6 netip.Prefix) {
	env, err := subnetenv.Read(a.o.SubnetFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("ignoring the previous subnet.env", "err", err)
		}
		return v4, v6
	}
	if p := env.Subnet.Masked(); a.cfg.Contains(p) {
		v4 = p
	}
	if p := env.IPv6Subnet.Masked(); a.cfg.ContainsIPv6(p) {
		v6 = p
	}
	return v4, v6
}

// nodeAddr is the address that identifies this node in the store: its
// public IPv4 address, or in an IPv6-only network its public IPv6 one.
func nodeAddr(cfg *subnet.Config, ext backend.ExternalInterface) netip.Addr {
	if cfg.EnableIPv4 {
		return ext.PublicIP
	}
	return ext.PublicIPv6
}

func (a *Agent) setOwn(l subnet.Lease) {
	a.mu.Lock()
	a.own = l
	a.mu.Unlock()
}

// Own returns the lease this node holds.
func (a *Agent) Own() subnet.Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.own
}

func (a *Agent) writeSubnetEnv(l subnet.Lease) error {
	env := &subnetenv.Env{MTU: a.be.MTU(), IPMasq: a.o.IPMasq}
	if a.cfg.EnableIPv4 {
		env.Networks = []netip.Prefix{a.cfg.Network}
		env.Subnet = netip.PrefixFrom(l.Subnet.Addr().Next(), l.Subnet.Bits())
	}
	if a.cfg.EnableIPv6 && l.IPv6Subnet.IsValid() {
		env.IPv6Networks = []netip.Prefix{a.cfg.IPv6Network}
		env.IPv6Subnet = netip.PrefixFrom(l.IPv6Subnet.Addr().Next(), l.IPv6Subnet.Bits())
	}
	syncEnv, err := subnetenv.WriteVisible(a.o.SubnetFile, env)
	if err != nil {
		return fmt.Errorf("writing subnet.env: %w", err)
	}
	a.log.Info("wrote subnet.env", "path", a.o.SubnetFile, "subnet", env.Subnet, "ipv6_subnet", env.IPv6Subnet, "mtu", env.MTU)
	// Readers see it now; its fsyncs (milliseconds on a busy disk) hold
	// neither the listing nor the peers up.
	a.syncs.Go(func() {
		if err := syncEnv(); err != nil {
			a.log.Warn("syncing subnet.env to disk", "err", err)
		}
	})
	return nil
}

// DefaultCoalesce is Options.Coalesce's default: a stream of lease changes
// (nodes registering one by one) costs one Set per few milliseconds rather
// than one per lease, and the last change of the stream waits at most this.
const DefaultCoalesce = 5 * time.Millisecond

// streamMin is how many Sets in a row, each within Coalesce of the one
// before, make a stream (see Options.Coalesce): a change or two after
// another is programmed at once.
const streamMin = 4

// reconcileLoop owns the peer set. It batches whatever arrived while the
// previous Set ran, so that a burst of events costs one reconcile, and
// while changes keep arriving it gathers them (Options.Coalesce). The agent
// is ready once the first Set has returned and hostDone is closed (the
// host's set-up, setUpHost, is done).
func (a *Agent) reconcileLoop(ctx context.Context, start time.Time, ownCh <-chan subnet.Lease, evCh <-chan []subnet.Event, hostDone <-chan struct{}) {
	peers := newPeerSet()
	own := a.Own()
	resync := time.NewTicker(a.o.Resync)
	defer resync.Stop()
	changes := a.be.Changes()
	snapshot := false // the watch's first batch has arrived
	dirty := true     // the desired state changed since the last Set
	bulk := 0         // leases changed since the last Set
	// Lease changes since freed memory was last returned to the OS, and the
	// timer that returns it once a stream of them has been quiet a while.
	sinceRelease := 0
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	var settleC <-chan time.Time
	// release hands the garbage of many lease changes back to the OS: one
	// GC (milliseconds), and the peer set's spare room.
	release := func() {
		sinceRelease = 0
		settle.Stop()
		settleC = nil
		peers.compact()
		debug.FreeOSMemory()
		a.m.MemoryReleases.Inc()
	}
	// The subnets changed since the last Set, handed to the backend so that
	// it looks at those alone (backend.State.Incremental); incremental is
	// false when the backend must compare every peer (the first Set, a new
	// own lease).
	var changed []netip.Prefix
	incremental := false
	var failed logonce.Errors
	// Coalescing: when the last Set ended, how many Sets in a row came
	// within Coalesce of the one before, and the timer a held Set waits on.
	var lastSet time.Time
	streak := 0
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()
	var holdC <-chan time.Time // hold.C while the timer runs
	waiting := false           // a Set is held for more changes
	programmed := false        // the first Set has returned
	var nPeers int             // peers handed to the last Set
	var firstTook time.Duration
	hostWait := hostDone // nil once the host's set-up is done
	markReady := func() {
		if a.ready.Load() || !programmed || hostWait != nil {
			return
		}
		// Peers that fail validation never get here; peer errors from the
		// backend (one unreachable peer) do not hold readiness back.
		a.steadyProcs()
		a.ready.Store(true)
		a.log.Info("ready", "since_start", time.Since(start).Round(time.Microsecond), "peers", nPeers,
			"programmed_in", firstTook.Round(time.Microsecond))
		if err := sdNotify("READY=1"); err != nil {
			a.log.Warn("sd_notify", "err", err)
		}
		if a.o.OnReady != nil {
			a.o.OnReady()
		}
	}

	handleEvents := func(evs []subnet.Event) {
		first := !snapshot
		snapshot = true
		added, changedL, removed := peers.apply(evs)
		if first {
			a.log.Info("leases listed", "leases", peers.len())
			for _, l := range added {
				a.log.Debug("peer", "key", l.Key(), "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.IPv6())
			}
		} else {
			for _, l := range added {
				if l.Primary() != own.Primary() {
					a.log.Info("peer added", "key", l.Key(), "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.IPv6())
				}
			}
			for _, l := range changedL {
				if l.Primary() != own.Primary() {
					a.log.Info("peer changed", "key", l.Key(), "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.IPv6())
				}
			}
			for _, l := range removed {
				if l.Primary() != own.Primary() {
					a.log.Info("peer removed", "key", l.Key(), "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.IPv6())
				}
			}
		}
		if n := len(added) + len(changedL) + len(removed); n > 0 {
			dirty = true
			bulk += n
			for _, ls := range [][]subnet.Lease{added, changedL, removed} {
				for i := range ls {
					changed = append(changed, ls[i].Primary())
				}
			}
		}
		a.m.LeasesKnown.Set(float64(peers.len()))
	}
	handleOwn := func(l subnet.Lease) {
		if l.Key() != own.Key() {
			a.log.Warn("this node's lease changed", "old", own.Key(), "new", l.Key())
		} else {
			a.log.Info("lease re-acquired", "key", l.Key())
		}
		own = l
		a.setOwn(l)
		if err := a.writeSubnetEnv(l); err != nil {
			a.log.Error("rewriting subnet.env", "err", err)
		}
		a.setFirewallPolicy(l)
		dirty = true
		incremental = false
	}

	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case evs := <-evCh:
			handleEvents(evs)
		case l := <-ownCh:
			handleOwn(l)
		case <-resync.C:
			force = true
		case <-changes:
			force = true
		case <-holdC:
			holdC = nil
		case <-hostWait:
			hostWait = nil
			markReady()
		case <-settleC:
			// A stream of many small Sets has ended (see bulkRelease).
			release()
		}
		// Take whatever else is already waiting, so a burst costs one Set.
	drain:
		for {
			select {
			case evs := <-evCh:
				handleEvents(evs)
			case l := <-ownCh:
				handleOwn(l)
			default:
				break drain
			}
		}
		if !snapshot || (!dirty && !force) {
			continue
		}
		if c := a.o.Coalesce; c > 0 && !force && programmed {
			switch since := time.Since(lastSet); {
			case since < c && streak >= streamMin:
				// A stream: wait until Coalesce after the last Set.
				if !waiting {
					hold.Reset(c - since)
					holdC, waiting = hold.C, true
				}
				continue
			case since < c:
				streak++
			case !waiting:
				streak = 0 // a lone change, after a quiet Coalesce
			}
		}
		if waiting {
			// The held Set runs now (or a forced one takes its changes).
			hold.Stop()
			holdC, waiting = nil, false
		}
		first := !programmed // this Set programs every peer listed at start
		var cpu0 time.Duration
		var cpuErr error
		if first {
			cpu0, cpuErr = procstat.CPU(os.Getpid())
		}
		t0 := time.Now()
		// The sorted peer set itself, own lease included: no copy or sort
		// per event. backend.State's contract: the backend skips the own
		// subnet's lease and keeps nothing of the slice after Set.
		state := backend.State{Own: own, Peers: peers.all()}
		if incremental && !force {
			// A resync or a foreign change compares every peer: a
			// backstop should not rest on the bookkeeping it backs up.
			state.Incremental, state.Changed = true, changed
		}
		err := a.be.Set(ctx, state)
		lastSet = time.Now()
		changed = changed[:0]
		if cap(changed) > bulkRelease {
			changed = nil // a burst's list: let it go
		}
		incremental = true
		took := time.Since(t0)
		if first {
			// Set returns once the kernel has acknowledged every entry.
			a.m.InitialProgram.Set(took.Seconds())
			if cpu1, err := procstat.CPU(os.Getpid()); err == nil && cpuErr == nil {
				a.m.InitialProgramCPU.Set((cpu1 - cpu0).Seconds())
			}
		}
		a.m.ReconcileRuns.Inc()
		a.m.ReconcileTime.Observe(took.Seconds())
		nPeers = len(state.Peers)
		if peers.has(own.Primary()) {
			nPeers--
		}
		a.m.PeersProgrammed.Set(float64(nPeers))
		dirty = false
		sinceRelease += bulk
		switch {
		case bulk >= bulkRelease:
			// A big batch (the first listing, a burst) leaves megabytes of
			// decoded etcd responses and netlink messages behind; the
			// runtime would return them to the OS only over minutes.
			// One GC now (milliseconds) keeps the agent's RSS at what it
			// really holds.
			release()
		case sinceRelease >= bulkRelease:
			// As many changes arriving one by one (a cluster cold start, a
			// restore) leave as much behind, over many Sets: the same GC
			// once no Set has run for settleAfter.
			settle.Reset(settleAfter)
			settleC = settle.C
		}
		bulk = 0
		if err != nil {
			a.m.ReconcileErrors.Inc()
			if failed.Changed(err) {
				a.log.Error("programming the data plane", "err", err)
			}
		} else if failed.Cleared() {
			a.log.Info("data plane programmed again without errors")
		}
		if ctx.Err() != nil {
			return
		}
		if first {
			programmed, firstTook = true, took
			if hostWait != nil {
				a.notReady(a.hostSetUpReason())
			}
			markReady()
		}
	}
}

// steadyProcs applies Options.SteadyProcs.
func (a *Agent) steadyProcs() {
	n := a.o.SteadyProcs
	if n <= 0 {
		return
	}
	if engine := backend.EngineOf(a.be); engine != "kernel" {
		a.log.Debug("keeping GOMAXPROCS: the data plane runs in this process", "engine", engine, "gomaxprocs", runtime.GOMAXPROCS(0))
		return
	}
	if prev := runtime.GOMAXPROCS(n); prev != n {
		a.log.Info("GOMAXPROCS for the steady state", "gomaxprocs", n, "was", prev)
	}
}

// bulkRelease is the number of lease changes in one Set from which on the
// agent returns freed memory to the OS right after it (and, over many
// Sets, settleAfter after the last).
const bulkRelease = 1000

// settleAfter is how long after the last of many small Sets, together over
// bulkRelease lease changes, the agent returns freed memory to the OS.
const settleAfter = time.Second

// setUpHost turns forwarding on and, with a firewall, runs its keeper
// until ctx ends; done is closed once forwarding is on and the keeper's
// first pass (the rules for the own lease, then the other mode's removed)
// has ended, successful or not (the keeper retries every resync).
func (a *Agent) setUpHost(ctx context.Context, done chan struct{}) {
	if a.cfg.EnableIPv4 {
		ensureSysctl(a.log, a.o.IPForwardFile)
	}
	if a.cfg.EnableIPv6 {
		ensureSysctl(a.log, a.o.IPv6ForwardFile)
	}
	if a.fw == nil {
		close(done)
		return
	}
	_ = a.fw.Run(ctx)
}

// hostSetUpReason is the readiness reason while setUpHost has not ended.
func (a *Agent) hostSetUpReason() string {
	if a.fw == nil {
		return "turning forwarding on"
	}
	return "programming the firewall rules"
}

// openFirewall opens the firewall of the mode the network config chooses
// and makes its keeper (a.fw) with the policy for the own lease; setUpHost
// runs it, and firstPass is called after its first pass, so that the rules
// are in place before the agent reports ready. The other mode's firewall,
// when it can be opened, is retired by the keeper once the chosen rules are
// in place. Without a usable firewall the agent runs without rules and says
// so, and a.fw stays nil.
func (a *Agent) openFirewall(own subnet.Lease, firstPass func(error)) {
	if a.o.Firewall == nil {
		return
	}
	mode := firewall.ModeFor(a.cfg.EnableNFTables)
	log := a.log.With("component", "firewall", "mode", string(mode))
	fw, err := a.o.Firewall(mode)
	if err != nil {
		log.Error("firewall unavailable: masquerade and forward rules will not be kept, and the other mode's rules stay", "err", err)
		return
	}
	o := firewall.KeeperOptions{Period: a.o.FirewallResync, Log: log, FirstPass: firstPass}
	switch other, err := a.o.Firewall(mode.Other()); {
	case err == nil:
		o.Retire = other
	case errors.Is(err, firewall.ErrNotInstalled):
		log.Debug("the other firewall mode is not installed: nothing of it to remove", "other", string(mode.Other()))
	default:
		log.Warn("cannot open the other firewall mode to remove its rules", "other", string(mode.Other()), "err", err)
	}
	a.fw = firewall.NewKeeper(fw, o)
	log.Info("firewall mode", "masq", a.o.IPMasq, "forward", a.o.ForwardRules, "resync", a.o.FirewallResync)
	a.setFirewallPolicy(own)
}

// setFirewallPolicy hands the keeper the policy for the own lease.
func (a *Agent) setFirewallPolicy(own subnet.Lease) {
	if a.fw == nil {
		return
	}
	if err := a.fw.Set(a.firewallPolicy(own)); err != nil {
		a.log.Error("firewall policy", "err", err)
	}
}

// firewallPolicy is the masquerade and forward policy for the own lease:
// one part per family that the network config enables and the lease holds.
func (a *Agent) firewallPolicy(own subnet.Lease) firewall.Policy {
	p := firewall.Policy{Masq: a.o.IPMasq, Forward: a.o.ForwardRules}
	if a.cfg.EnableIPv4 && own.Subnet.IsValid() {
		p.IPv4 = firewall.Net{Network: a.cfg.Network, Subnet: own.Subnet}
	}
	if a.cfg.EnableIPv6 && own.IPv6Subnet.IsValid() {
		p.IPv6 = firewall.Net{Network: a.cfg.IPv6Network, Subnet: own.IPv6Subnet}
	}
	return p
}
