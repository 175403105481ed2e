package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// These tests run the whole agent (Run: config, backend, acquire, subnet.env,
// the reconcile loop, shutdown) in-process against a fake subnet manager and
// the real vxlan backend on the netlink fake, so that they run under -race
// and without privileges. The firewall is left out (Options.Firewall nil).

const testNetConf = `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

// fakeManager is a subnet.Manager whose leases and events the test drives.
type fakeManager struct {
	cfg *subnet.Config

	mu          sync.Mutex
	acquireErrs []error // returned by the first AcquireLease calls, in order
	lease       subnet.Lease
	opts        []subnet.AcquireOptions
	onOwn       func(*subnet.Lease)
	released    int

	events    chan []subnet.Event // batches WatchLeases hands to the agent
	delivered chan struct{}       // one value per batch the agent accepted
	keeping   chan struct{}       // closed once KeepLease has its callback
	active    atomic.Int32        // calls of the blocking methods not yet returned
}

func newFakeManager(t *testing.T, own netip.Prefix) *fakeManager {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(testNetConf))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeManager{
		cfg:       cfg,
		lease:     subnet.Lease{Subnet: own, EtcdLease: 7},
		events:    make(chan []subnet.Event),
		delivered: make(chan struct{}, 1024),
		keeping:   make(chan struct{}),
	}
}

func (m *fakeManager) GetNetworkConfig(context.Context) (*subnet.Config, error) { return m.cfg, nil }

func (m *fakeManager) WatchConfig(ctx context.Context, _ *subnet.Config, _ func(*subnet.Config, error)) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	<-ctx.Done()
	return ctx.Err()
}

func (m *fakeManager) AcquireLease(_ context.Context, _ *subnet.Config, attrs subnet.LeaseAttrs, opts subnet.AcquireOptions) (*subnet.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts = append(m.opts, opts)
	if len(m.acquireErrs) > 0 {
		err := m.acquireErrs[0]
		m.acquireErrs = m.acquireErrs[1:]
		return nil, err
	}
	l := m.lease
	l.Attrs = attrs
	return &l, nil
}

func (m *fakeManager) LookupLease(context.Context, *subnet.Config, netip.Addr) (*subnet.Lease, error) {
	return nil, nil
}

func (m *fakeManager) KeepLease(ctx context.Context, _ *subnet.Config, _ *subnet.Lease, _ time.Duration, onChange func(*subnet.Lease)) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.mu.Lock()
	m.onOwn = onChange
	m.mu.Unlock()
	close(m.keeping)
	<-ctx.Done()
	return ctx.Err()
}

func (m *fakeManager) WatchLeases(ctx context.Context, _ *subnet.Config, fn func([]subnet.Event)) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case evs := <-m.events:
			fn(evs)
			m.delivered <- struct{}{}
		}
	}
}

func (m *fakeManager) ReleaseLease(context.Context, *subnet.Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.released++
	return nil
}

// loseOwn plays the store losing this node's lease and acquiring l instead.
func (m *fakeManager) loseOwn(t *testing.T, l subnet.Lease) {
	t.Helper()
	select {
	case <-m.keeping:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent never called KeepLease")
	}
	m.mu.Lock()
	fn := m.onOwn
	m.mu.Unlock()
	fn(&l)
}

// send hands one batch to the agent and waits until it took it.
func (m *fakeManager) send(t *testing.T, evs ...subnet.Event) {
	t.Helper()
	select {
	case m.events <- evs:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent is not watching leases")
	}
	select {
	case <-m.delivered:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not take a batch of lease events")
	}
}

// recorder wraps the real backend and records every Set.
type recorder struct {
	backend.Backend
	engine string // what Engine reports ("": the default, kernel)
	mu     sync.Mutex
	peers  []int              // len(State.Peers) of every Set, in order
	hold   chan chan struct{} // if set, Set sends a release channel here and waits on it
	closed atomic.Bool
}

// Engine implements backend.EngineReporter.
func (r *recorder) Engine() string { return r.engine }

func (r *recorder) Set(ctx context.Context, s backend.State) error {
	r.mu.Lock()
	r.peers = append(r.peers, len(s.Peers))
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		release := make(chan struct{})
		hold <- release
		<-release
	}
	return r.Backend.Set(ctx, s)
}

func (r *recorder) Close() error {
	r.closed.Store(true)
	return r.Backend.Close()
}

func (r *recorder) sets() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.peers...)
}

// syncBuffer is a log sink safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rig is one agent under test.
type rig struct {
	t       *testing.T
	mgr     *fakeManager
	nl      *netlinkx.Fake
	be      *recorder
	agent   *Agent
	metrics *Metrics
	logs    *syncBuffer
	env     string
	engine  string // the recorder's Engine, set before start
	cancel  context.CancelFunc
	done    chan error
}

var (
	underlay = netip.MustParsePrefix("192.168.0.1/24")
	ownNet   = netip.MustParsePrefix("10.0.1.0/24")
)

// newRig builds an agent on the fakes; edit adjusts its options before New.
func newRig(t *testing.T, edit func(*Options)) *rig {
	t.Helper()
	nl := netlinkx.NewFake()
	eth0 := nl.AddLink("eth0", 1500, underlay)
	dir := t.TempDir()
	fwd := filepath.Join(dir, "ip_forward")
	if err := os.WriteFile(fwd, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, mgr: newFakeManager(t, ownNet), nl: nl, logs: &syncBuffer{}, env: filepath.Join(dir, "subnet.env"), metrics: NewMetrics()}
	o := Options{
		Manager: r.mgr,
		Backends: func(name string) (backend.Spec, error) {
			if name != vxlan.TypeName {
				return backend.Spec{}, fmt.Errorf("unknown backend %q", name)
			}
			return backend.Spec{New: func(ctx context.Context, p backend.Params) (backend.Backend, error) {
				b, err := vxlan.New(ctx, p, vxlan.Config{Netlink: nl, VerifyEvery: time.Hour})
				if err != nil {
					return nil, err
				}
				r.be = &recorder{Backend: b, engine: r.engine}
				return r.be, nil
			}}, nil
		},
		External:      &backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: underlay.Addr(), PublicIP: underlay.Addr()},
		IPForwardFile: fwd,
		SubnetFile:    r.env,
		Resync:        time.Hour,
		Log:           slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:       r.metrics,
	}
	if edit != nil {
		edit(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.agent = a
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", r.logs.String())
		}
	})
	return r
}

// start runs the agent in a goroutine.
func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- r.agent.Run(ctx) }()
}

// stop cancels Run and waits for it to return.
func (r *rig) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("Run did not return within 10 s of its context ending")
		return nil
	}
}

// eventually polls cond until it holds or 10 s pass.
func (r *rig) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) waitReady() {
	r.t.Helper()
	r.eventually("the agent to be ready", func() bool { ok, _ := r.agent.Ready(); return ok })
}

// envSubnet returns FLANNEL_SUBNET from subnet.env, or zero.
func (r *rig) envSubnet() netip.Prefix {
	env, err := subnetenv.Read(r.env)
	if err != nil {
		return netip.Prefix{}
	}
	return env.Subnet
}

// peer is the vxlan lease of node k (k >= 2): subnet 10.<k/256>.<k%256>.0/24
// of the test network 10.0.0.0/8, public IP 172.16.0.0 + k.
func peer(k int) subnet.Lease {
	ip := netip.AddrFrom4([4]byte{172, 16, byte(k >> 8), byte(k)})
	data, _ := json.Marshal(vxlan.BackendData{VNI: 1, VtepMAC: vxlan.VtepMAC(ip, 1).String()})
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: ip, BackendType: vxlan.TypeName, BackendData: data},
	}
}

func added(ls ...subnet.Lease) []subnet.Event {
	evs := make([]subnet.Event, len(ls))
	for i, l := range ls {
		evs[i] = subnet.Event{Type: subnet.EventAdded, Lease: l}
	}
	return evs
}

func routeLine(l subnet.Lease) string {
	return fmt.Sprintf("route %s via %s dev flannel.1 onlink", l.Subnet, l.Subnet.Addr())
}

// Start-up: acquire retries while the store fails (not ready, with the
// reason), prefers the subnet of the previous subnet.env, writes subnet.env,
// turns forwarding on, programs the first listing and only then is ready.
func TestRunStartsAndAcquires(t *testing.T) {
	r := newRig(t, nil)
	r.mgr.acquireErrs = []error{errors.New("etcd unavailable"), errors.New("etcd unavailable")}
	prev := &subnetenv.Env{Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Subnet: netip.MustParsePrefix("10.0.7.1/24"), MTU: 1450}
	if err := subnetenv.Write(r.env, prev); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.eventually("the acquire error as the reason for not being ready", func() bool {
		_, why := r.agent.Ready()
		return strings.Contains(why, "acquiring a subnet lease: etcd unavailable")
	})
	<-r.mgr.keeping // acquired
	r.mgr.mu.Lock()
	opts := append([]subnet.AcquireOptions(nil), r.mgr.opts...)
	r.mgr.mu.Unlock()
	if len(opts) != 3 {
		t.Errorf("AcquireLease called %d times, want 3 (two failures, then the lease)", len(opts))
	}
	for _, o := range opts {
		if want := netip.MustParsePrefix("10.0.7.0/24"); o.Hint != want {
			t.Errorf("AcquireLease hint = %v, want %v from the previous subnet.env", o.Hint, want)
		}
	}
	if strings.Count(r.logs.String(), "cannot acquire a subnet lease yet") != 1 {
		t.Errorf("the same acquire error was not logged exactly once:\n%s", r.logs.String())
	}
	// Not ready before the first listing has been programmed.
	r.eventually("the agent to wait for the listing", func() bool {
		ok, why := r.agent.Ready()
		return !ok && why == "listing the leases"
	})
	r.mgr.send(t, added(peer(2), peer(3))...)
	r.waitReady()
	if got, want := r.envSubnet(), netip.MustParsePrefix("10.0.1.1/24"); got != want {
		t.Errorf("subnet.env FLANNEL_SUBNET = %v, want %v", got, want)
	}
	if b, _ := os.ReadFile(r.agent.o.IPForwardFile); string(b) != "1\n" {
		t.Errorf("ip_forward = %q, want forwarding turned on", b)
	}
	dump := r.nl.Dump()
	for _, want := range []string{"addr flannel.1 10.0.1.0/32", routeLine(peer(2)), routeLine(peer(3))} {
		if !strings.Contains(dump, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, dump)
		}
	}
	if got := r.agent.Own().Subnet; got != ownNet {
		t.Errorf("Own() = %v, want %v", got, ownNet)
	}
	// While the lease watch has lost etcd, the agent is not ready.
	r.agent.SetWatchLive(false)
	if ok, why := r.agent.Ready(); ok || !strings.Contains(why, "lease watch") {
		t.Errorf("Ready() with the watch down = %v, %q", ok, why)
	}
	r.agent.SetWatchLive(true)
	if ok, _ := r.agent.Ready(); !ok {
		t.Error("not ready again after the watch came back")
	}
}

// A burst of lease events that arrives while a Set runs costs one more Set,
// with the whole burst in it.
func TestBurstIsOneReconcile(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.mgr.send(t) // the first listing: no peers
	r.waitReady()

	// Hold the next Set, started by the first peer, while the burst arrives.
	hold := make(chan chan struct{})
	r.be.mu.Lock()
	r.be.hold = hold
	r.be.mu.Unlock()
	before := len(r.be.sets())
	r.mgr.send(t, added(peer(2))...)
	var release chan struct{}
	select {
	case release = <-hold:
	case <-time.After(10 * time.Second):
		t.Fatal("the first peer did not start a Set")
	}
	r.be.mu.Lock()
	r.be.hold = nil
	r.be.mu.Unlock()
	const n = 1000
	var burst []subnet.Lease
	for b := range 10 { // ten batches of 100: fewer than the agent buffers
		var ls []subnet.Lease
		for i := range n / 10 {
			ls = append(ls, peer(3+b*n/10+i))
		}
		burst = append(burst, ls...)
		r.mgr.send(t, added(ls...)...)
	}
	close(release)

	want := 1 + n
	r.eventually("the burst to be programmed", func() bool {
		return r.metric("weft_peers_programmed") == float64(want)
	})
	sets := r.be.sets()[before:]
	if sets[0] != 1 {
		t.Errorf("the held Set saw %d peers, want 1", sets[0])
	}
	for i, p := range sets[1:] {
		if p != want {
			t.Errorf("Set %d after the held one saw %d peers, want the whole burst (%d): the burst was split (Sets: %v)", i+1, p, want, sets)
		}
	}
	dump := r.nl.Dump()
	if got := strings.Count(dump, " dev flannel.1 onlink"); got != want {
		t.Errorf("%d routes through flannel.1, want %d", got, want)
	}
	if got := r.metric("weft_leases_known"); got != float64(want) {
		t.Errorf("weft_leases_known = %v, want %d", got, want)
	}

	// Removals fold the same way.
	var gone []subnet.Event
	for _, l := range burst[:500] {
		gone = append(gone, subnet.Event{Type: subnet.EventRemoved, Lease: l})
	}
	r.mgr.send(t, gone...)
	r.eventually("the removals to be programmed", func() bool {
		return strings.Count(r.nl.Dump(), " dev flannel.1 onlink") == want-500
	})
}

// metric reads the counter or gauge named name from the agent's registry.
func (r *rig) metric(name string) float64 {
	r.t.Helper()
	mfs, err := r.metrics.Registry.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	r.t.Fatalf("no metric %s", name)
	return 0
}

// When the store loses this node's lease and acquires another, the agent
// rewrites subnet.env, moves the device's address, stops routing the new
// own subnet as a peer, and stays ready.
func TestOwnLeaseLoss(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	newOwn := peer(9)
	r.mgr.send(t, added(peer(2), newOwn)...)
	r.waitReady()
	if dump := r.nl.Dump(); !strings.Contains(dump, routeLine(newOwn)) {
		t.Fatalf("peer %s not programmed:\n%s", newOwn.Subnet, dump)
	}

	lost := subnet.Lease{Subnet: newOwn.Subnet, EtcdLease: 8, Attrs: subnet.LeaseAttrs{PublicIP: underlay.Addr()}}
	r.mgr.loseOwn(t, lost)
	want := netip.MustParsePrefix("10.0.9.1/24")
	r.eventually("subnet.env to name the new subnet", func() bool { return r.envSubnet() == want })
	r.eventually("the device to carry the new subnet's address", func() bool {
		d := r.nl.Dump()
		return strings.Contains(d, "addr flannel.1 10.0.9.0/32") && !strings.Contains(d, "addr flannel.1 10.0.1.0/32")
	})
	dump := r.nl.Dump()
	if strings.Contains(dump, routeLine(newOwn)) {
		t.Errorf("the new own subnet is still routed as a peer:\n%s", dump)
	}
	if !strings.Contains(dump, routeLine(peer(2))) {
		t.Errorf("peer %s lost with the own lease:\n%s", peer(2).Subnet, dump)
	}
	if got := r.agent.Own(); got.Subnet != lost.Subnet || got.EtcdLease != 8 {
		t.Errorf("Own() = %v (etcd lease %d), want %v (8)", got.Subnet, got.EtcdLease, lost.Subnet)
	}
	if got := r.metric("weft_own_lease_changes_total"); got != 1 {
		t.Errorf("weft_own_lease_changes_total = %v, want 1", got)
	}
	if ok, why := r.agent.Ready(); !ok {
		t.Errorf("not ready after the lease changed: %s", why)
	}
	if !strings.Contains(r.logs.String(), "this node's lease changed") {
		t.Errorf("the lease change was not logged:\n%s", r.logs.String())
	}
}

// A Set that fails is counted and logged once; the next resync programs
// what failed, and the recovery is logged. Backend errors do not hold
// readiness back (a peer the kernel refuses must not keep a node out of
// service).
func TestBackendErrorsRecover(t *testing.T) {
	r := newRig(t, func(o *Options) { o.Resync = 20 * time.Millisecond })
	injected := errors.New("injected failure")
	r.nl.FailWrites(func(op string, _ any) error {
		if op == "ReplaceRoute" {
			return injected
		}
		return nil
	})
	r.start()
	r.mgr.send(t, added(peer(2), peer(3))...)
	r.waitReady()
	r.eventually("several failed reconciles", func() bool { return r.metric("weft_reconcile_errors_total") >= 3 })
	if dump := r.nl.Dump(); strings.Contains(dump, "via 10.0.2.0") {
		t.Fatalf("a route was programmed although every route write fails:\n%s", dump)
	}
	if got := strings.Count(r.logs.String(), `msg="programming the data plane"`); got != 1 {
		t.Errorf("the same error was logged %d times, want once", got)
	}
	if ok, why := r.agent.Ready(); !ok {
		t.Errorf("not ready while peer routes fail: %s", why)
	}

	r.nl.FailWrites(nil)
	r.eventually("the routes after the failure cleared", func() bool {
		d := r.nl.Dump()
		return strings.Contains(d, routeLine(peer(2))) && strings.Contains(d, routeLine(peer(3)))
	})
	r.eventually("the recovery to be logged", func() bool {
		return strings.Contains(r.logs.String(), "data plane programmed again without errors")
	})
	if got := r.metric("weft_peers_programmed"); got != 2 {
		t.Errorf("weft_peers_programmed = %v, want 2", got)
	}
}

// When its context ends, Run stops every goroutine it started and returns
// nil; the device, neighbours, FDB entries, routes, subnet.env and the
// lease stay as they were.
func TestShutdownLeavesDataPlane(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.mgr.send(t, added(peer(2), peer(3), peer(4))...)
	r.waitReady()
	<-r.mgr.keeping
	before := r.nl.Dump()
	writes := r.nl.Writes()
	envBefore, err := os.ReadFile(r.env)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run after its context ended: %v, want nil", err)
	}
	if n := r.mgr.active.Load(); n != 0 {
		t.Errorf("%d store calls still running after Run returned", n)
	}
	if !r.be.closed.Load() {
		t.Error("the backend was not closed")
	}
	if after := r.nl.Dump(); after != before {
		t.Errorf("the kernel state changed on shutdown:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if w := r.nl.Writes(); w != writes {
		t.Errorf("%d netlink writes during shutdown, want none", w-writes)
	}
	if envAfter, err := os.ReadFile(r.env); err != nil || !bytes.Equal(envAfter, envBefore) {
		t.Errorf("subnet.env after shutdown = %q, %v; want it unchanged:\n%s", envAfter, err, envBefore)
	}
	r.mgr.mu.Lock()
	released := r.mgr.released
	r.mgr.mu.Unlock()
	if released != 0 {
		t.Errorf("the lease was released %d times on shutdown, want never", released)
	}
	for _, want := range []string{"neigh 10.0.4.0 dev flannel.1", "fdb ", routeLine(peer(4))} {
		if !strings.Contains(before, want) {
			t.Errorf("the state before shutdown lacks %q (the check above proves nothing):\n%s", want, before)
		}
	}
}

// Run returns when its context ends at any stage of start-up: here while
// acquire retries.
func TestShutdownWhileAcquiring(t *testing.T) {
	r := newRig(t, nil)
	for range 1000 {
		r.mgr.acquireErrs = append(r.mgr.acquireErrs, errors.New("no subnet free"))
	}
	r.start()
	r.eventually("acquire to be retrying", func() bool {
		_, why := r.agent.Ready()
		return strings.Contains(why, "no subnet free")
	})
	err := r.stop()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want an error wrapping context.Canceled", err)
	}
	if _, statErr := os.Stat(r.env); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("subnet.env written without a lease: %v", statErr)
	}
}

// A stream of changes is gathered: once streamMin Sets in a row came within
// Coalesce of each other, the next changes wait for one Set at Coalesce
// after the last; the first changes of a stream, and a change after a quiet
// Coalesce, are programmed at once (well before Coalesce).
func TestStreamIsCoalesced(t *testing.T) {
	const coalesce = 2 * time.Second
	r := newRig(t, func(o *Options) { o.Coalesce = coalesce })
	r.start()
	r.mgr.send(t) // the first listing: no peers
	r.waitReady()

	programmed := func(l subnet.Lease) bool { return strings.Contains(r.nl.Dump(), routeLine(l)) }
	// quick sends l and checks that it is programmed well before Coalesce.
	quick := func(l subnet.Lease) {
		t.Helper()
		t0 := time.Now()
		r.mgr.send(t, added(l)...)
		r.eventually("a peer to be programmed", func() bool { return programmed(l) })
		if took := time.Since(t0); took > coalesce/2 {
			t.Errorf("peer %s programmed %s after its event: held back (Coalesce %s)", l.Subnet, took, coalesce)
		}
	}
	for k := 2; k < 2+streamMin; k++ {
		quick(peer(k))
	}
	before := len(r.be.sets())
	held := []subnet.Lease{peer(10), peer(11), peer(12)}
	r.mgr.send(t, added(held[0])...)
	// Not programmed for a while (the Set waits until Coalesce after the
	// last one): an agent that does not coalesce programs it in
	// milliseconds.
	for deadline := time.Now().Add(coalesce / 4); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if programmed(held[0]) {
			t.Fatalf("peer %s of a stream programmed at once: not coalesced", held[0].Subnet)
		}
	}
	for _, l := range held[1:] {
		r.mgr.send(t, added(l)...)
	}
	r.eventually("the held peers to be programmed", func() bool { return programmed(held[len(held)-1]) })
	for _, l := range held {
		if !programmed(l) {
			t.Errorf("peer %s not programmed with the held Set", l.Subnet)
		}
	}
	if sets := r.be.sets()[before:]; len(sets) != 1 || sets[0] != streamMin+len(held) {
		t.Errorf("Sets after the stream's first %d: %v, want one with %d leases", streamMin, sets, streamMin+len(held))
	}

	// After a quiet Coalesce, a change is a lone change again, and the next
	// one starts a new stream.
	time.Sleep(coalesce + coalesce/4)
	quick(peer(20))
	quick(peer(21))
}

// TestSteadyProcs checks that an agent with SteadyProcs runs on that many
// Ps once ready when its data plane is the kernel's, and keeps them all
// when a userspace engine works in its process.
func TestSteadyProcs(t *testing.T) {
	for _, tc := range []struct {
		engine string
		want   int
	}{
		{engine: "", want: 1}, // a backend without EngineReporter: the kernel
		{engine: "kernel", want: 1},
		{engine: "userspace", want: 3},
	} {
		t.Run("engine="+tc.engine, func(t *testing.T) {
			prev := runtime.GOMAXPROCS(3)
			t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
			r := newRig(t, func(o *Options) { o.SteadyProcs = 1 })
			r.engine = tc.engine
			r.start()
			r.mgr.send(t, added(peer(2))...)
			r.waitReady()
			if got := runtime.GOMAXPROCS(0); got != tc.want {
				t.Errorf("GOMAXPROCS %d once ready, want %d", got, tc.want)
			}
		})
	}
}

// TestStreamReleasesMemory checks that freed memory goes back to the OS
// once after 1,000 lease changes that came over many small Sets, when the
// stream has been quiet for settleAfter, and not after fewer changes.
func TestStreamReleasesMemory(t *testing.T) {
	r := newRig(t, func(o *Options) { o.Coalesce = time.Millisecond })
	r.start()
	r.mgr.send(t) // the first listing: no peers
	r.waitReady()
	releases := func() float64 { return testutil.ToFloat64(r.metrics.MemoryReleases) }
	base := releases()
	// stream sends the peers from..to-1 one by one, waiting every 50 for
	// them to be programmed: many Sets, none of bulkRelease changes,
	// however the machine's load lets the agent coalesce.
	stream := func(from, to int) {
		for k := from; k < to; k++ {
			r.mgr.send(t, added(peer(k))...)
			if k%50 == 0 || k == to-1 {
				last := peer(k)
				r.eventually("the stream's peers to be programmed", func() bool { return strings.Contains(r.nl.Dump(), routeLine(last)) })
			}
		}
	}
	stream(2, 2+bulkRelease-1)
	time.Sleep(settleAfter + settleAfter/2)
	if got := releases() - base; got != 0 {
		t.Fatalf("%v memory releases after %d changes, want none below %d", got, bulkRelease-1, bulkRelease)
	}
	stream(2+bulkRelease-1, 2+bulkRelease)
	// Only additions: each Set's changes are the growth of its peer set.
	sets := r.be.sets()
	for i := 1; i < len(sets); i++ {
		if n := sets[i] - sets[i-1]; n >= bulkRelease {
			t.Fatalf("a Set of %d new peers: not a stream of small Sets", n)
		}
	}
	r.eventually("memory to be released after the quiet time", func() bool { return releases()-base == 1 })
	time.Sleep(settleAfter + settleAfter/2)
	if got := releases() - base; got != 1 {
		t.Errorf("%v memory releases for one stream, want 1", got)
	}
}
