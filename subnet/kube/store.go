// Package kube is the Kubernetes store behind subnet.Manager, flanneld's
// -kube-subnet-mgr: a node's subnet is its Node's spec.podCIDR(s), allocated
// by kube-controller-manager, and each node's backend data travels in
// annotations on its Node (flanneld's keys and formats, so that weftd and
// flanneld nodes share one cluster). The network config comes from a local
// net-conf.json. One list-and-watch follows every Node but keeps only what leases
// need (name, podCIDRs, the prefixed annotations); its events become the
// same validated lease events as the etcd store's. It never touches the
// kernel.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/subnet"
)

// DefaultNetConfPath is flanneld's -net-config-path default.
const DefaultNetConfPath = "/etc/kube-flannel/net-conf.json"

// The NetworkUnavailable condition flanneld sets, word for word.
const (
	conditionReason  = "FlannelIsUp"
	conditionMessage = "Flannel is running on this node"
)

// Options configure a Store. Client, NodeName and NetConfPath are required.
type Options struct {
	// Client talks to the apiserver (NewAPI).
	Client API
	// NodeName is this node's Node object.
	NodeName string
	// AnnotationPrefix is -kube-annotation-prefix, normalised as flanneld
	// does (DefaultAnnotationPrefix when empty).
	AnnotationPrefix string
	// NetConfPath is the net-conf.json file (read once, as flanneld).
	NetConfPath string
	// SetNodeNetworkUnavailable sets the Node's NetworkUnavailable
	// condition to False once the lease is held (flanneld's default true).
	SetNodeNetworkUnavailable bool
	// Logger receives the store's logs; slog.Default() when nil.
	Logger *slog.Logger
	// ValidatorFor builds the backend-data validator from the config.
	ValidatorFor func(*subnet.Config) subnet.DataValidator
	// OnWatchLive, when not nil, is called with true when the lease watch
	// follows the apiserver and with false when it lost it.
	OnWatchLive func(live bool)
	// LivenessInterval is how often the watch checks that the apiserver
	// answers (5 s when zero).
	LivenessInterval time.Duration
	// RetryMin and RetryMax bound the backoff of patches that fail
	// (200 ms and 10 s when zero).
	RetryMin, RetryMax time.Duration
}

// Store implements subnet.Manager on Kubernetes Node objects.
type Store struct {
	o    Options
	cs   API
	name string
	ann  Annotations
	cfg  *subnet.Config // from net-conf.json; SubnetLen 0
	log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
	synced chan struct{} // closed when the Nodes were first listed

	liveMu   sync.Mutex // serialises updateLive
	mu       sync.Mutex
	nodes    map[string]*nodeInfo // every Node, as last seen
	watching bool                 // the Node watch is established
	probeOK  bool                 // the last liveness probe was answered
	pending  map[string]*nodeInfo // node name -> latest state (nil: deleted)
	kick     chan struct{}        // a pending change (capacity 1)
	ownCh    chan struct{}        // closed and replaced when the own node changes
	live     bool
	liveSet  bool
	attrs    *subnet.LeaseAttrs // what AcquireLease advertised
}

var _ subnet.Manager = (*Store)(nil)

// nodeInfo is what the store keeps of a Node.
type nodeInfo struct {
	name        string
	podCIDRs    []string
	annotations map[string]string
	// netUnavailable is the own node's NetworkUnavailable condition status
	// ("" when absent), and netReason its reason.
	netUnavailable, netReason string
}

// New reads net-conf.json, starts following the Nodes and returns the Store;
// Close stops it. A missing or malformed net-conf.json is an error naming
// the file.
func New(o Options) (*Store, error) {
	if o.Client == nil || o.NodeName == "" {
		return nil, errors.New("kube store: Client and NodeName are required")
	}
	if o.NetConfPath == "" {
		o.NetConfPath = DefaultNetConfPath
	}
	if o.AnnotationPrefix == "" {
		o.AnnotationPrefix = DefaultAnnotationPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LivenessInterval <= 0 {
		o.LivenessInterval = 5 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 200 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 10 * time.Second
	}
	ann, err := NewAnnotations(o.AnnotationPrefix)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadNetConf(o.NetConfPath, o.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{
		o: o, cs: o.Client, name: o.NodeName, ann: ann, cfg: cfg, log: o.Logger,
		nodes:   make(map[string]*nodeInfo),
		synced:  make(chan struct{}),
		probeOK: true,
		pending: make(map[string]*nodeInfo),
		kick:    make(chan struct{}, 1),
		ownCh:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.follow(ctx)
	}()
	return s, nil
}

// ReadNetConf reads and parses net-conf.json with the Kubernetes-mode rules.
func ReadNetConf(path string, log *slog.Logger) (*subnet.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the network config (-net-config-path): %w", err)
	}
	cfg, unknown, ignored, err := subnet.ParseKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("network config %s: %w", path, err)
	}
	if len(unknown) > 0 {
		log.Warn("network config: ignoring unknown fields", "file", path, "fields", unknown)
	}
	if len(ignored) > 0 {
		log.Info("network config: in Kubernetes mode subnets are the Nodes' podCIDRs; ignoring", "file", path, "fields", ignored)
	}
	return cfg, nil
}

// Close stops following the Nodes and waits for it.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Annotations returns the annotation keys the store uses.
func (s *Store) Annotations() Annotations { return s.ann }

// put records the latest state of a node (nil: deleted) and queues it for
// the lease watch. The queue holds one entry per node (a newer state
// replaces an older one), so it never blocks the follower, never grows
// beyond the number of nodes and never needs a retry loop.
func (s *Store) put(name string, info *nodeInfo) {
	s.mu.Lock()
	if info == nil {
		if _, ok := s.nodes[name]; !ok {
			s.mu.Unlock()
			return
		}
		delete(s.nodes, name)
	} else {
		if old, ok := s.nodes[name]; ok && sameInfo(old, info) {
			s.mu.Unlock()
			return // a relist or a change to fields the store drops
		}
		s.nodes[name] = info
	}
	s.pending[name] = info
	if name == s.name {
		close(s.ownCh)
		s.ownCh = make(chan struct{})
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func sameInfo(a, b *nodeInfo) bool {
	return slices.Equal(a.podCIDRs, b.podCIDRs) && maps.Equal(a.annotations, b.annotations) &&
		a.netUnavailable == b.netUnavailable && a.netReason == b.netReason
}

// names returns the names of the nodes the store knows.
func (s *Store) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		out = append(out, n)
	}
	return out
}

// snapshot returns every node the store knows.
func (s *Store) snapshot() map[string]*nodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*nodeInfo, len(s.nodes))
	for k, v := range s.nodes {
		out[k] = v
	}
	return out
}

func (s *Store) markSynced() {
	select {
	case <-s.synced:
	default:
		close(s.synced)
	}
}

func (s *Store) hasSynced() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// takePending returns the queued node states and empties the queue.
func (s *Store) takePending() map[string]*nodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = make(map[string]*nodeInfo, len(p))
	return p
}

// ownChanged returns a channel closed at the next change of the own node.
func (s *Store) ownChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ownCh
}

// setWatching records whether the Node watch is established, and
// setProbe whether the apiserver answered the last liveness probe; the
// lease watch is live when both hold.
func (s *Store) setWatching(ok bool, err error) {
	s.mu.Lock()
	s.watching = ok
	if ok {
		s.probeOK = true
	}
	s.mu.Unlock()
	s.updateLive(err)
}

func (s *Store) setProbe(ok bool, err error) {
	s.mu.Lock()
	s.probeOK = ok
	s.mu.Unlock()
	s.updateLive(err)
}

func (s *Store) updateLive(err error) {
	// One change at a time, callback included, so that OnWatchLive sees
	// the changes in the order they were decided.
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	s.mu.Lock()
	live := s.watching && s.probeOK
	first := !s.liveSet
	changed := first || s.live != live
	s.live, s.liveSet = live, true
	s.mu.Unlock()
	if !changed || (first && !live) {
		return
	}
	switch {
	case live && first:
		s.log.Info("watching nodes")
	case live:
		s.log.Info("watching nodes: the apiserver answers again")
	default:
		s.log.Warn("watching nodes: lost the apiserver; the peer set may be stale until it is back", "err", err)
	}
	if s.o.OnWatchLive != nil {
		s.o.OnWatchLive(live)
	}
}

// ownNode returns the own node as the store last saw it (nil if absent).
func (s *Store) ownNode() *nodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[s.name]
}

// waitSynced waits until the Nodes have been listed once, logging once
// while it cannot.
func (s *Store) waitSynced(ctx context.Context) error {
	logged := false
	// A short poll: the agent's start to ready waits on it.
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for !s.hasSynced() {
		if !logged && time.Since(start) > 5*time.Second {
			s.log.Warn("waiting for the apiserver to list the nodes", "node", s.name)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if logged {
		s.log.Info("nodes listed")
	}
	return nil
}

// GetNetworkConfig returns net-conf.json's config once the own Node has a
// podCIDR: subnets are podCIDRs of that length. While the Node is missing
// or has no podCIDR it waits, logging once, instead of failing as flanneld
// does. A podCIDR outside Network is an error naming both.
func (s *Store) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	if err := s.waitSynced(ctx); err != nil {
		return nil, err
	}
	last := ""
	for {
		changed := s.ownChanged()
		n := s.ownNode()
		var why string
		switch {
		case n == nil:
			why = "this node's Node object does not exist yet; waiting for it"
		case len(n.podCIDRs) == 0:
			why = "this node has no podCIDR yet; waiting for kube-controller-manager (--allocate-node-cidrs) or an operator to assign one"
		default:
			cfg, err := withPodCIDRs(s.cfg, s.name, n.podCIDRs, s.o.NetConfPath)
			if err != nil {
				return nil, err
			}
			if last != "" {
				s.log.Info("podCIDR assigned", "node", s.name, "pod_cidrs", n.podCIDRs)
			}
			return cfg, nil
		}
		if why != last {
			s.log.Warn(why, "node", s.name)
			last = why
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// WatchConfig does nothing until ctx ends: net-conf.json is read once at
// start, as flanneld does.
func (s *Store) WatchConfig(ctx context.Context, _ *subnet.Config, _ func(*subnet.Config, error)) error {
	<-ctx.Done()
	return ctx.Err()
}

// ownLease computes the own lease from the node's podCIDRs.
func (s *Store) ownLease(cfg *subnet.Config, n *nodeInfo, attrs subnet.LeaseAttrs) (*subnet.Lease, error) {
	v4, v6, err := splitPodCIDRs(n.podCIDRs)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", s.name, err)
	}
	l := &subnet.Lease{Attrs: attrs}
	if cfg.EnableIPv4 {
		if !cfg.Contains(v4) {
			return nil, fmt.Errorf("node %q: podCIDR %v is not a /%d inside Network %s of %s", s.name, v4, cfg.SubnetLen, cfg.Network, s.o.NetConfPath)
		}
		l.Subnet = v4
	}
	if cfg.EnableIPv6 {
		if !cfg.ContainsIPv6(v6) {
			return nil, fmt.Errorf("node %q: IPv6 podCIDR %v is not a /%d inside IPv6Network %s of %s", s.name, v6, cfg.IPv6SubnetLen, cfg.IPv6Network, s.o.NetConfPath)
		}
		l.IPv6Subnet = v6
	}
	return l, nil
}

// AcquireLease returns the lease the own Node's podCIDR gives, after
// writing this node's annotations (a strategic-merge patch of
// nodes/<name>/status, as flanneld) when they differ.
func (s *Store) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, _ subnet.AcquireOptions) (*subnet.Lease, error) {
	n := s.ownNode()
	if n == nil || len(n.podCIDRs) == 0 {
		return nil, fmt.Errorf("node %q has no podCIDR", s.name)
	}
	l, err := s.ownLease(cfg, n, attrs)
	if err != nil {
		return nil, err
	}
	if err := s.ensureAnnotations(ctx, n, attrs); err != nil {
		return nil, err
	}
	s.mu.Lock()
	a := attrs
	s.attrs = &a
	s.mu.Unlock()
	return l, nil
}

// ensureAnnotations patches the annotations of n that differ from what
// attrs want; it reports whether it patched.
func (s *Store) ensureAnnotations(ctx context.Context, n *nodeInfo, attrs subnet.LeaseAttrs) error {
	want := s.ann.Desired(attrs, n.annotations)
	diff := map[string]string{}
	for k, v := range want {
		if cur, ok := n.annotations[k]; !ok || cur != v {
			diff[k] = v
		}
	}
	if len(diff) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": diff}})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.cs.PatchNode(pctx, s.name, types.StrategicMergePatchType, body, "status"); err != nil {
		return fmt.Errorf("patching the annotations of node %q: %w", s.name, err)
	}
	keys := make([]string, 0, len(diff))
	for k := range diff {
		keys = append(keys, strings.TrimPrefix(k, s.ann.Prefix))
	}
	slices.Sort(keys)
	s.log.Info("node annotations written", "node", s.name, "keys", keys)
	return nil
}

// ensureCondition sets NetworkUnavailable=False (reason FlannelIsUp) when
// the node does not have it.
func (s *Store) ensureCondition(ctx context.Context, n *nodeInfo) (bool, error) {
	if !s.o.SetNodeNetworkUnavailable || (n.netUnavailable == string(corev1.ConditionFalse) && n.netReason == conditionReason) {
		return false, nil
	}
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: conditionReason, Message: conditionMessage,
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	raw, err := json.Marshal([]corev1.NodeCondition{cond})
	if err != nil {
		return false, err
	}
	body := fmt.Appendf(nil, `{"status":{"conditions":%s}}`, raw)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.cs.PatchNode(pctx, s.name, types.StrategicMergePatchType, body, "status"); err != nil {
		return false, fmt.Errorf("setting NetworkUnavailable=False on node %q: %w", s.name, err)
	}
	return true, nil
}

// KeepLease keeps the own Node as the lease wants it until ctx ends: it
// sets NetworkUnavailable=False until that sticks, restores this node's
// annotations when someone edits or removes them, and when the Node comes
// back with another podCIDR (deleted and registered again) it calls
// onChange with the new lease. Failed patches are retried with backoff;
// each kind of failure is logged once.
func (s *Store) KeepLease(ctx context.Context, cfg *subnet.Config, lease *subnet.Lease, _ time.Duration, onChange func(*subnet.Lease)) error {
	cur := *lease
	wait := s.o.RetryMin
	lastErr := ""
	condLogged := false
	for {
		changed := s.ownChanged()
		var retry <-chan time.Time
		if n := s.ownNode(); n != nil && len(n.podCIDRs) > 0 {
			err := s.keepOnce(ctx, cfg, n, &cur, onChange, &condLogged)
			switch {
			case err != nil && ctx.Err() == nil:
				if msg := err.Error(); msg != lastErr {
					s.log.Warn("keeping this node's lease; retrying", "err", err)
					lastErr = msg
				}
				retry = time.After(wait)
				wait = min(2*wait, s.o.RetryMax)
			case err == nil:
				if lastErr != "" {
					s.log.Info("this node's annotations and condition are in place again", "node", s.name)
				}
				lastErr, wait = "", s.o.RetryMin
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-retry:
		}
	}
}

func (s *Store) keepOnce(ctx context.Context, cfg *subnet.Config, n *nodeInfo, cur *subnet.Lease, onChange func(*subnet.Lease), condLogged *bool) error {
	l, err := s.ownLease(cfg, n, cur.Attrs)
	if err != nil {
		return err
	}
	if l.Subnet != cur.Subnet || l.IPv6Subnet != cur.IPv6Subnet {
		s.log.Warn("this node's podCIDR changed (the Node was registered again)", "node", s.name, "old", cur.Subnet, "new", l.Subnet, "old_ipv6", cur.IPv6Subnet, "new_ipv6", l.IPv6Subnet)
		*cur = *l
		onChange(l)
	}
	if want := s.ann.Desired(cur.Attrs, n.annotations); !sameValues(want, n.annotations) {
		s.log.Info("this node's annotations differ from its lease; restoring them", "node", s.name)
		if err := s.ensureAnnotations(ctx, n, cur.Attrs); err != nil {
			return err
		}
	}
	set, err := s.ensureCondition(ctx, n)
	if err != nil {
		return err
	}
	if set && !*condLogged {
		s.log.Info("node condition set", "node", s.name, "NetworkUnavailable", "False", "reason", conditionReason)
		*condLogged = true
	}
	return nil
}

// sameValues reports whether every key of want has its value in have.
func sameValues(want, have map[string]string) bool {
	for k, v := range want {
		if cur, ok := have[k]; !ok || cur != v {
			return false
		}
	}
	return true
}

// ReleaseLease removes this node's lease annotations (kube-subnet-manager,
// backend type and data, public IPs), so that peers drop it; the podCIDR
// stays with the Node. Used by an explicit teardown only.
func (s *Store) ReleaseLease(ctx context.Context, _ *subnet.Lease) error {
	_, err := RemoveLeaseAnnotations(ctx, s.cs, s.ann, s.name)
	return err
}

// RemoveLeaseAnnotations removes the lease annotations of the named Node
// (kube-subnet-manager, backend type and data, public IPs) with a
// strategic-merge patch of its status, as flanneld writes them: peers then
// drop the node. The podCIDR stays with the Node, and so do the
// annotations a person sets (public-ip-overwrite, node-public-ip). It
// returns the Node's podCIDRs.
func RemoveLeaseAnnotations(ctx context.Context, api API, a Annotations, name string) ([]string, error) {
	del := map[string]any{}
	for _, k := range []string{a.SubnetManager, a.BackendType, a.BackendData, a.BackendV6Data, a.PublicIP, a.PublicIPv6} {
		del[k] = nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": del}})
	if err != nil {
		return nil, err
	}
	n, err := api.PatchNode(ctx, name, types.StrategicMergePatchType, body, "status")
	if err != nil {
		return nil, fmt.Errorf("removing the lease annotations of node %q: %w", name, err)
	}
	return toInfo(n, a.Prefix, "").podCIDRs, nil
}

// LookupLease implements subnet.Manager: the lease this node's Node still
// advertises from an earlier run (its podCIDR and annotations, flanneld's
// or Weft's), without changing it; nil when the Node is not marked as a
// flannel node. publicIP is not needed: the Node is found by name. The
// vxlan backend takes its VtepMAC from it when it must create its device
// afresh, as flanneld does from its backend-data annotation.
func (s *Store) LookupLease(ctx context.Context, _ *subnet.Config, _ netip.Addr) (*subnet.Lease, error) {
	n := s.ownNode()
	if n == nil {
		node, err := s.cs.GetNode(ctx, s.name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading node %q: %w", s.name, err)
		}
		n = toInfo(node, s.ann.Prefix, s.name)
	}
	if n.annotations[s.ann.SubnetManager] != "true" {
		return nil, nil
	}
	l := s.ann.describe(n)
	if bd := l.Attrs.BackendData; bd != nil && (string(bd) == "null" || !json.Valid(bd)) {
		l.Attrs.BackendData = nil
	}
	if bd := l.Attrs.BackendV6Data; bd != nil && (string(bd) == "null" || !json.Valid(bd)) {
		l.Attrs.BackendV6Data = nil
	}
	return &l, nil
}

// NodePublicIP reads the own Node's node-public-ip and node-public-ipv6
// annotations (set by an operator), which choose the public address and so
// the interface, as in flanneld. Absent values are zero; a malformed value
// is an error naming the annotation.
func (s *Store) NodePublicIP(ctx context.Context) (v4, v6 netip.Addr, err error) {
	n, err := s.cs.GetNode(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		return v4, v6, fmt.Errorf("reading node %q: %w", s.name, err)
	}
	if v := n.Annotations[s.ann.NodePublicIP]; v != "" {
		if v4, err = netip.ParseAddr(v); err != nil || !v4.Is4() {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("node %q: annotation %s=%q is not an IPv4 address", s.name, s.ann.NodePublicIP, v)
		}
	}
	if v := n.Annotations[s.ann.NodePublicIPv6]; v != "" {
		if v6, err = netip.ParseAddr(v); err != nil || !v6.Is6() {
			return v4, netip.Addr{}, fmt.Errorf("node %q: annotation %s=%q is not an IPv6 address", s.name, s.ann.NodePublicIPv6, v)
		}
	}
	return v4, v6, nil
}

// NodeLease is one flannel Node as `weft leases` shows it: what its podCIDR
// and annotations say, and why it is not a usable lease, if it is not.
type NodeLease struct {
	Node  string
	Lease subnet.Lease
	// Invalid is why peers skip the node ("" when usable, or when no
	// network config was given to check it against).
	Invalid string
}

// ListLeases reads every Node with kube-subnet-manager="true" and returns
// its lease, checked against cfg (skipped when cfg is nil) with each
// node's podCIDR length, in node-name order, and the number of Nodes that
// are not flannel nodes.
func ListLeases(ctx context.Context, api API, ann Annotations, cfg *subnet.Config, validate func(*subnet.Config) subnet.DataValidator) ([]NodeLease, int, error) {
	list, err := api.ListNodes(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("listing nodes: %w", err)
	}
	var out []NodeLease
	others := 0
	for i := range list.Items {
		n := toInfo(&list.Items[i], ann.Prefix, "")
		if n.annotations[ann.SubnetManager] != "true" {
			others++
			continue
		}
		nl := NodeLease{Node: n.name, Lease: ann.describe(n)}
		if cfg != nil {
			c := cfg
			if v4, v6, err := splitPodCIDRs(n.podCIDRs); err == nil {
				if k, err := cfg.WithSubnetLen(v4); err == nil && cfg.EnableIPv4 {
					c = k
				}
				if c.EnableIPv6 && v6.IsValid() {
					if k, err := c.WithIPv6SubnetLen(v6); err == nil {
						c = k
					}
				}
			}
			var v subnet.DataValidator
			if validate != nil {
				v = validate(c)
			}
			if _, v6, err := ann.nodeLease(c, n, v); err != nil {
				nl.Invalid = strings.TrimPrefix(err.Error(), fmt.Sprintf("node %q: ", n.name))
			} else if v6 != nil {
				nl.Invalid = "IPv4 only: " + strings.TrimPrefix(v6.Error(), fmt.Sprintf("node %q: ", n.name))
			}
		}
		out = append(out, nl)
	}
	slices.SortFunc(out, func(a, b NodeLease) int { return strings.Compare(a.Node, b.Node) })
	return out, others, nil
}

// describe fills a lease with whatever of a node's podCIDRs and annotations
// parses, for display.
func (a Annotations) describe(n *nodeInfo) subnet.Lease {
	var l subnet.Lease
	l.Subnet, l.IPv6Subnet, _ = splitPodCIDRs(n.podCIDRs)
	l.Attrs.BackendType = n.annotations[a.BackendType]
	if ip, err := netip.ParseAddr(n.annotations[a.PublicIP]); err == nil {
		l.Attrs.PublicIP = ip
	}
	if ip, err := netip.ParseAddr(n.annotations[a.PublicIPv6]); err == nil {
		l.Attrs.PublicIPv6 = &ip
	}
	if d := n.annotations[a.BackendData]; d != "" {
		l.Attrs.BackendData = json.RawMessage(d)
	}
	if d := n.annotations[a.BackendV6Data]; d != "" {
		l.Attrs.BackendV6Data = json.RawMessage(d)
	}
	return l
}
