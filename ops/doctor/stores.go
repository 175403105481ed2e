package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/kube"
)

// lookTimeout bounds each read of a store: a store that does not answer is
// a check that could not look, not a doctor that hangs.
const lookTimeout = 5 * time.Second

// EtcdLister is what EtcdStore reads (*etcdstore.Store).
type EtcdLister interface {
	GetNetworkConfig(ctx context.Context) (*subnet.Config, error)
	// ListLeases reads every lease, invalid ones with the reason agents
	// skip them.
	ListLeases(ctx context.Context) (*etcdstore.Listing, error)
}

var _ EtcdLister = (*etcdstore.Store)(nil)

// EtcdStore is the doctor's Store over etcd.
type EtcdStore struct{ S EtcdLister }

// Look implements Store.
func (e EtcdStore) Look(ctx context.Context) *Snapshot {
	snap := &Snapshot{LeaseFix: []string{
		"weft leases   # shows every lease, with the reason an invalid one is skipped",
		"on the node that should not hold the lease: weft node teardown, then start weftd again (it takes a fresh subnet and MAC)",
		"or remove a stale lease: weft leases release <subnet>",
	}}
	// GetNetworkConfig waits for a config that is missing or unreadable;
	// the doctor does not.
	cctx, cancel := context.WithTimeout(ctx, lookTimeout)
	defer cancel()
	cfg, err := e.S.GetNetworkConfig(cctx)
	if err != nil {
		snap.Fail = &Result{Status: Unknown, Verdict: "cannot read the network config", Cause: err.Error(),
			Fix: []string{"check -etcd-endpoints, -etcd-prefix and the TLS flags (the same as weftd's), and that etcd answers: etcdctl endpoint health"}}
		return snap
	}
	snap.Config = cfg
	ls, err := e.S.ListLeases(ctx)
	if err != nil {
		snap.Fail = &Result{Status: Unknown, Verdict: "cannot list the leases", Cause: err.Error()}
		return snap
	}
	for _, en := range ls.Entries {
		if en.Invalid != nil {
			snap.Invalid = append(snap.Invalid, InvalidLease{Key: en.Name, Err: en.Invalid})
		} else {
			snap.Leases = append(snap.Leases, en.Lease)
		}
	}
	return snap
}

// KubeStore is the doctor's Store in Kubernetes mode (weftd
// -kube-subnet-mgr): the network config is net-conf.json, read with the
// Kubernetes-mode rules, and the leases are the flannel Nodes (podCIDRs and
// annotations); the node's own lease is its Node's.
type KubeStore struct {
	// API reaches the apiserver at Host; when it is nil, APIErr says why
	// no client could be made (an unreadable kubeconfig, no in-cluster
	// config).
	API    kube.API
	APIErr error
	Host   string
	// Annotations are the keys of -kube-annotation-prefix.
	Annotations kube.Annotations
	// NetConfPath is net-conf.json (-net-config-path).
	NetConfPath string
	// Getenv finds the node's name as weftd does (NODE_NAME, or
	// POD_NAMESPACE/POD_NAME); nil is no environment.
	Getenv func(string) string
	// Validate checks the backends' lease data (registry.ValidateData).
	Validate func(*subnet.Config) subnet.DataValidator
}

// Look implements Store.
func (k KubeStore) Look(ctx context.Context) *Snapshot {
	a := k.Annotations
	snap := &Snapshot{LeaseFix: []string{
		"weft leases -kube-subnet-mgr [-kubeconfig-file F]   # every flannel Node, with the reason an invalid one is skipped",
		"on the node whose annotations are wrong or copied: restart weftd (it rewrites its " + a.Prefix + "* annotations; a cloned VM needs a fresh machine-id and MAC first)",
		"a Node whose machine is gone: kubectl delete node NAME",
	}}
	apiFix := []string{
		"check -kubeconfig-file, -kube-api-url (the same as weftd's; without them the in-cluster config of a pod) and that the apiserver answers: kubectl get nodes",
		"weftd's ServiceAccount needs get, list, watch and patch on nodes and nodes/status (the flannel ClusterRole)",
	}
	cfg, err := kube.ReadNetConf(k.NetConfPath, slog.New(slog.DiscardHandler))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		snap.Fail = &Result{Status: Unknown, Verdict: "cannot read the network config " + k.NetConfPath, Cause: err.Error(),
			Fix: []string{"give weft doctor weftd's -net-config-path; in the DaemonSet it is the kube-flannel-cfg ConfigMap mounted at " + kube.DefaultNetConfPath + ":",
				"kubectl -n kube-flannel get configmap kube-flannel-cfg -o jsonpath='{.data.net-conf\\.json}' > /tmp/net-conf.json; weft doctor -kube-subnet-mgr -net-config-path /tmp/net-conf.json ..."}}
		return snap
	case err != nil:
		snap.Fail = &Result{Status: Problem, Verdict: "the network config " + k.NetConfPath + " is invalid", Cause: err.Error() + "; weftd refuses to start with it",
			Fix: []string{"fix net-conf.json in the ConfigMap (kubectl -n kube-flannel edit configmap kube-flannel-cfg), then restart weftd on every node"}}
		return snap
	}
	snap.Config = cfg
	if k.API == nil {
		snap.Fail = &Result{Status: Unknown, Verdict: "no client for the Kubernetes API", Cause: fmt.Sprint(k.APIErr), Fix: apiFix}
		return snap
	}
	getenv := k.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cctx, cancel := context.WithTimeout(ctx, lookTimeout)
	defer cancel()
	name, err := kube.NodeName(cctx, k.API, getenv)
	if err != nil {
		snap.Fail = &Result{Status: Unknown, Verdict: "cannot tell which Node this node is", Cause: err.Error(),
			Fix: []string{"NODE_NAME=<this node's Node name> weft doctor ...   # as weftd's DaemonSet sets it from spec.nodeName; kubectl get nodes lists the names"}}
		return snap
	}
	sv, err := kube.Look(cctx, k.API, a, name, cfg, k.Validate)
	if err != nil {
		snap.Fail = &Result{Status: Unknown, Verdict: "cannot read the Nodes from the Kubernetes API at " + k.Host, Cause: err.Error(), Fix: apiFix}
		return snap
	}
	snap.Source = "Kubernetes API " + k.Host + ", Node " + name
	snap.Node = name
	snap.Config = sv.Config
	for _, nl := range sv.Leases {
		snap.Leases = append(snap.Leases, nl.Lease)
	}
	for _, nl := range sv.Invalid {
		if nl.Node != name {
			snap.Invalid = append(snap.Invalid, InvalidLease{Key: "node/" + nl.Node, Err: errors.New(nl.Invalid)})
		}
	}
	snap.Own = sv.Own
	snap.PublicIP, snap.PublicIPv6 = sv.NodePublicIP, sv.NodePublicIPv6
	show := "kubectl get node " + name + " -o jsonpath='{.spec.podCIDRs} {.metadata.annotations}'"
	switch {
	case !sv.OwnFound:
		snap.Fail = &Result{Status: Problem, Verdict: "Node " + name + " does not exist",
			Cause: "weftd's lease is its Node's podCIDR; the kubelet has not registered this node yet, or NODE_NAME names another (weftd waits for the Node)",
			Fix:   []string{"kubectl get nodes   # the names of the registered Nodes", "start the kubelet, or set NODE_NAME to this node's Node name (weftd's and weft doctor's)"}}
	case errors.Is(sv.ConfigErr, kube.ErrNoPodCIDR):
		snap.Fail = &Result{Status: Problem, Verdict: "Node " + name + " has no podCIDR",
			Cause: "in Kubernetes mode the node's subnet is its Node's spec.podCIDR, which kube-controller-manager assigns only with --allocate-node-cidrs=true and a --cluster-cidr; weftd waits until the Node has one, and pods cannot start meanwhile",
			Fix: []string{
				"run kube-controller-manager with --allocate-node-cidrs=true --cluster-cidr=" + cfg.Network.String() + " (kubeadm: kubeadm init --pod-network-cidr=" + cfg.Network.String() + ")",
				"or give the Node one by hand (once: it cannot change later): kubectl patch node " + name + ` -p '{"spec":{"podCIDR":"<a free subnet of ` + cfg.Network.String() + `, as long as those of the other Nodes>"}}'`,
				show}}
	case sv.ConfigErr != nil:
		snap.Fail = &Result{Status: Problem, Verdict: strings.TrimPrefix(sv.ConfigErr.Error(), fmt.Sprintf("node %q: ", name)),
			Cause: "Network (and IPv6Network) of net-conf.json must hold kube-controller-manager's --cluster-cidr: weftd does not start with a podCIDR outside them",
			Fix:   []string{"make net-conf.json's Network match kube-controller-manager's --cluster-cidr (both families in a dual-stack network), then restart weftd", show}}
	case !sv.OwnMarked:
		snap.Fail = &Result{Status: Problem, Verdict: "Node " + name + " has no " + a.SubnetManager + "=true annotation: weftd has not taken its lease",
			Cause: "weftd annotates its Node (a patch of nodes/status) when it starts: it is not running here, runs with another -kube-annotation-prefix, cannot patch the Node, or weft node teardown removed the annotations",
			Fix:   []string{"start weftd -kube-subnet-mgr on this node; its log says why it cannot patch the Node", show}}
	case sv.OwnErr != nil:
		snap.Fail = &Result{Status: Problem, Verdict: strings.TrimPrefix(sv.OwnErr.Error(), fmt.Sprintf("node %q: ", name)),
			Cause: "peers skip a Node whose podCIDR and annotations do not make a valid lease, so no traffic reaches this node's pods; weftd writes them, so a person or another tool changed them",
			Fix:   []string{"restart weftd on this node: it rewrites its annotations", show}}
	}
	return snap
}
