// Package doctor is `weft doctor`: it looks at one node's overlay and says,
// check by check, what is wrong and the command that fixes it.
//
// The kernel findings come from the backend's own dry run (backend.Spec
// Plan: what Set would change, derived from the same desired state as Set),
// the firewall findings from a RuleChecker (today over kernel/iptables'
// rule data; the firewall seam's Check can stand behind it), and the host
// checks (sysctls, cni0, host-local reservations, the neighbour table, the
// agent's health) live here. The doctor never changes anything.
package doctor

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// Status is the verdict of one check.
type Status string

// The statuses, from best to worst. A report's exit code is 1 when any
// check found a problem, else 2 when any could not look, else 0.
const (
	OK      Status = "ok"
	Skipped Status = "skipped" // does not apply to this node
	Warn    Status = "warn"    // worth knowing, not breaking the overlay
	Unknown Status = "unknown" // could not look
	Problem Status = "problem"
)

// CheckNames are the checks a report holds, in its order (peers
// reachable only with Options.Peers); Documentation/troubleshooting.md has
// a section for each.
var CheckNames = []string{
	"store", "external interface",
	"sysctl ip_forward", "sysctl rp_filter", "sysctl bridge-nf-call-iptables",
	"firewall forward", "firewall chains", "firewall backends",
	"subnet.env", "bridge address", "overlay device", "routes, neighbours, fdb",
	"peer leases", "host-local reservations", "neighbour table",
	"agent ready", "agent errors", "peers reachable",
}

// Result is one check's verdict.
type Result struct {
	// Check names the check, e.g. "sysctl ip_forward".
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Verdict is one line saying what was found.
	Verdict string `json:"verdict"`
	// Cause explains a problem or a warning; Fix holds the commands that
	// fix it, to run in order.
	Cause string   `json:"cause,omitempty"`
	Fix   []string `json:"fix,omitempty"`
	// Details lists the individual findings (entries, leases, peers).
	Details []string `json:"details,omitempty"`
}

// Report is the whole answer of `weft doctor`.
type Report struct {
	// Node describes the node looked at ("192.168.1.11, subnet
	// 10.244.3.0/24, backend vxlan").
	Node    string   `json:"node"`
	Results []Result `json:"checks"`
}

// ExitCode is 1 when a check found a problem, else 2 when one could not
// look, else 0.
func (r *Report) ExitCode() int {
	code := 0
	for _, res := range r.Results {
		switch res.Status {
		case Problem:
			return 1
		case Unknown:
			code = 2
		}
	}
	return code
}

// Store is where the doctor reads the network config and the leases:
// etcd (EtcdStore) or the Kubernetes API (KubeStore).
type Store interface {
	// Look reads them once. It does not fail: what it could not read, or
	// a problem with the node's own lease, is in the Snapshot's Fail.
	Look(ctx context.Context) *Snapshot
}

// Snapshot is what a Store read.
type Snapshot struct {
	// Source names the store in the store check's verdict ("" in etcd
	// mode; "Kubernetes API https://10.0.0.1:6443, Node node1").
	Source string
	// Config is the network config, nil when it could not be read.
	Config *subnet.Config
	// Leases are the valid leases (the node's own among them), Invalid
	// the ones agents skip.
	Leases  []subnet.Lease
	Invalid []InvalidLease
	// Node is the node's name when the store knows the node by name
	// (Kubernetes mode: its Node); Own is then the node's own lease (nil
	// when it has no usable one, and Fail says why). With Node "" the
	// doctor finds the own lease by the node's public address.
	Node string
	Own  *subnet.Lease
	// PublicIP and PublicIPv6, when valid, are the node's public addresses
	// as the store sets them (Kubernetes: the Node's node-public-ip and
	// node-public-ipv6 annotations), which win over -public-ip and
	// -public-ipv6 as in weftd.
	PublicIP, PublicIPv6 netip.Addr
	// Fail, when set, is the store check's verdict instead of the summary
	// (its Check is filled in): Unknown when the store could not be read,
	// Problem when the network config or the node's own lease is wrong,
	// with the cause and the fix in the store's terms.
	Fail *Result
	// LeaseFix are the commands that deal with an invalid or duplicate
	// lease in this store, for the peer leases check.
	LeaseFix []string
}

// InvalidLease is a lease agents skip, with the reason: Key names it (the
// etcd key below the subnets folder, or node/NAME).
type InvalidLease struct {
	Key string
	Err error
}

// Options says where the node's overlay is: the same settings weftd runs
// with, and the CNI paths.
type Options struct {
	Store      Store
	Backends   func(name string) (backend.Spec, error)
	Iface      agent.IfaceOptions
	SubnetFile string
	// IPMasq and ForwardRules say which of Weft's chains the agent keeps.
	IPMasq, ForwardRules bool
	// Firewall checks Weft's chains; nil skips that check.
	Firewall RuleChecker
	// NFTables checks Weft's nftables tables in nftables mode
	// (EnableNFTables); nil skips that check there.
	NFTables TableChecker
	// Backends of iptables whose rules are counted (iptables-legacy and
	// iptables-nft); nil uses the installed programs.
	IPTablesBackends []IPTablesBackend
	// HealthzURL is the agent's health server ("" when it serves none).
	HealthzURL string
	// Bridge is the CNI bridge (cni0).
	Bridge string
	// CNICacheDir is libcni's cache (/var/lib/cni/cache); IPAMDir
	// host-local's store (/var/lib/cni/networks).
	CNICacheDir, IPAMDir string
	// Peers probes every peer's overlay path; ProbeTimeout bounds each probe.
	Peers        bool
	ProbeTimeout time.Duration
	Log          *slog.Logger
}

// node is what the checks share once the basics are read.
type node struct {
	o       Options
	ext     backend.ExternalInterface
	extErr  error // why ext is unknown
	cfg     *subnet.Config
	leases  []subnet.Lease
	invalid []InvalidLease
	snap    *Snapshot
	own     *subnet.Lease
	plan    *backend.Plan
	device  string // the overlay device, "" for none
}

// Run runs every check and returns the report. It never changes the node.
func Run(ctx context.Context, o Options) *Report {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Bridge == "" {
		o.Bridge = "cni0"
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = time.Second
	}
	n := &node{o: o}
	r := &Report{}
	add := func(res ...Result) { r.Results = append(r.Results, res...) }

	add(n.checkStore(ctx)...)
	extErr := n.extErr
	add(n.checkSysctls()...)
	add(n.checkFirewall(ctx)...)
	add(n.checkSubnetEnv())
	add(n.checkBridge())
	add(n.checkOverlay(ctx, extErr)...)
	add(n.checkLeases())
	add(n.checkReservations())
	add(n.checkNeighbourTable(ctx))
	add(n.checkAgent(ctx)...)
	if o.Peers {
		add(n.checkPeers(ctx))
	}
	r.Node = n.describe(extErr)
	return r
}

func (n *node) describe(extErr error) string {
	s := "external interface unknown"
	if extErr == nil {
		s = n.ext.Name + " " + n.ext.PublicIP.String()
	}
	if n.snap != nil && n.snap.Node != "" {
		s += ", Node " + n.snap.Node
	}
	if n.own != nil {
		s += ", subnet " + n.own.Subnet.String()
	}
	if n.cfg != nil {
		s += ", backend " + n.cfg.BackendType
	}
	return s
}

// peers returns the valid leases other than the node's own.
func (n *node) peers() []subnet.Lease {
	var out []subnet.Lease
	for _, l := range n.leases {
		if n.own == nil || l.Subnet != n.own.Subnet {
			out = append(out, l)
		}
	}
	return out
}

// ownSubnet returns the node's leased subnet, or the zero prefix.
func (n *node) ownSubnet() netip.Prefix {
	if n.own == nil {
		return netip.Prefix{}
	}
	return n.own.Subnet
}
