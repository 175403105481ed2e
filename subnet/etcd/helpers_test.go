package etcd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// logBuffer collects a store's logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many lines contain every one of subs.
func (b *logBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

const testPrefix = "/coreos.com/network"

// testOptions returns fast options logging into logs.
func testOptions(logs *logBuffer) Options {
	return Options{
		Logger:             slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		BackoffMin:         20 * time.Millisecond,
		BackoffMax:         300 * time.Millisecond,
		LeaseCheckInterval: 200 * time.Millisecond,
	}
}

func newTestStore(t testing.TB, cli *clientv3.Client) (*Store, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	return NewWithClient(cli, testOptions(logs)), logs
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustConfig(t testing.TB, js string) *subnet.Config {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(js))
	if err != nil {
		t.Fatalf("ParseConfig(%s): %v", js, err)
	}
	return cfg
}

func attrsFor(ip string) subnet.LeaseAttrs {
	a := netip.MustParseAddr(ip)
	b := a.As4()
	return subnet.LeaseAttrs{
		PublicIP:    a,
		BackendType: "vxlan",
		BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:%02x:%02x:%02x:%02x"}`, b[0], b[1], b[2], b[3])),
	}
}

func leaseValue(t testing.TB, ip string) string {
	t.Helper()
	v, err := attrsFor(ip).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func put(t testing.TB, cli *clientv3.Client, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	resp, err := cli.Put(testCtx(t, 10*time.Second), key, val, opts...)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp
}

func del(t testing.TB, cli *clientv3.Client, key string) {
	t.Helper()
	if _, err := cli.Delete(testCtx(t, 10*time.Second), key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

func subnetKey(p string) string {
	return testPrefix + "/subnets/" + subnet.SubnetKey(netip.MustParsePrefix(p), netip.Prefix{})
}

// peerModel folds lease events into the set of peers a watcher believes in.
type peerModel struct {
	mu      sync.Mutex
	peers   map[netip.Prefix]subnet.LeaseAttrs
	batches int
	events  []subnet.Event
	changed chan struct{}
}

func newPeerModel() *peerModel {
	return &peerModel{peers: map[netip.Prefix]subnet.LeaseAttrs{}, changed: make(chan struct{}, 1)}
}

func (m *peerModel) apply(evs []subnet.Event) {
	m.mu.Lock()
	m.batches++
	for _, ev := range evs {
		m.events = append(m.events, ev)
		switch ev.Type {
		case subnet.EventAdded, subnet.EventChanged:
			m.peers[ev.Lease.Primary()] = ev.Lease.Attrs
		case subnet.EventRemoved:
			delete(m.peers, ev.Lease.Primary())
		}
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

func (m *peerModel) snapshot() map[netip.Prefix]subnet.LeaseAttrs {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[netip.Prefix]subnet.LeaseAttrs, len(m.peers))
	for k, v := range m.peers {
		out[k] = v
	}
	return out
}

// waitFor waits until cond holds on the peer set, or fails the test.
func (m *peerModel) waitFor(t testing.TB, d time.Duration, what string, cond func(map[netip.Prefix]subnet.LeaseAttrs) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		if cond(m.snapshot()) {
			return
		}
		select {
		case <-m.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s; peers: %v", d, what, m.snapshot())
		}
	}
}

func hasPeer(p string) func(map[netip.Prefix]subnet.LeaseAttrs) bool {
	return func(m map[netip.Prefix]subnet.LeaseAttrs) bool { _, ok := m[netip.MustParsePrefix(p)]; return ok }
}

func lacksPeer(p string) func(map[netip.Prefix]subnet.LeaseAttrs) bool {
	return func(m map[netip.Prefix]subnet.LeaseAttrs) bool { _, ok := m[netip.MustParsePrefix(p)]; return !ok }
}

// startWatch runs WatchLeases until the test ends.
func startWatch(t testing.TB, s *Store, cfg *subnet.Config, fn func([]subnet.Event)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchLeases(ctx, cfg, fn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("WatchLeases did not return after cancel")
		}
	})
}

// etcdPeers lists the valid-looking leases in etcd as the model would hold them.
func etcdPeers(t testing.TB, cli *clientv3.Client, cfg *subnet.Config) map[netip.Prefix]subnet.LeaseAttrs {
	t.Helper()
	resp, err := cli.Get(testCtx(t, 10*time.Second), testPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]subnet.LeaseAttrs{}
	for _, kv := range resp.Kvs {
		v4, v6, err := subnet.ParseSubnetKey(strings.TrimPrefix(string(kv.Key), testPrefix+"/subnets/"))
		if err != nil {
			continue
		}
		a, err := subnet.ParseLeaseAttrs(kv.Value)
		if err != nil {
			continue
		}
		l := subnet.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: a}
		if cfg.ValidateLease(&l, nil) == nil {
			out[v4] = a
		}
	}
	return out
}

func samePeers(a, b map[netip.Prefix]subnet.LeaseAttrs) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !v.Equal(w) {
			return false
		}
	}
	return true
}
