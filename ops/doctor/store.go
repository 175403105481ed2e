package doctor

import (
	"context"
	"fmt"
	"slices"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// checkStore reads the network config and the leases from the store, and
// finds the node's own lease: the one the store names (Kubernetes mode:
// the node's Node), else the one advertising its public address (with
// several, the one subnet.env names).
//
// It also finds the external interface as the agent does: for the families
// the config turns on, or IPv4 alone when the config cannot be read.
func (n *node) checkStore(ctx context.Context) []Result {
	snap := n.o.Store.Look(ctx)
	n.snap = snap
	if snap.PublicIP.IsValid() {
		n.o.Iface.PublicIP = snap.PublicIP
	}
	if snap.PublicIPv6.IsValid() {
		n.o.Iface.PublicIPv6 = snap.PublicIPv6
	}
	cfg := snap.Config
	if cfg == nil {
		n.ext, n.extErr = agent.ChooseExternal(n.o.Iface)
	} else {
		n.cfg = cfg
		n.ext, n.extErr = agent.ChooseExternalFor(n.o.Iface, cfg.EnableIPv4, cfg.EnableIPv6)
		if cfg.BackendType == vxlan.TypeName {
			if opts, err := vxlan.ParseOptions(cfg.Backend); err == nil {
				n.device = opts.DeviceName()
			}
		}
		if cfg.BackendType == wireguard.TypeName {
			n.device = wireguard.DeviceName
			if !cfg.EnableIPv4 {
				n.device = wireguard.DeviceNameV6
			}
		}
	}
	n.leases, n.invalid = snap.Leases, snap.Invalid
	var res Result
	if snap.Fail != nil {
		res = *snap.Fail
		res.Check = "store"
	} else {
		res = Result{Check: "store", Status: OK}
		res.Verdict = fmt.Sprintf("network %s, backend %s, %s, %d invalid", cfg.Network, cfg.BackendType, count(len(n.leases), "valid lease"), len(n.invalid))
		if snap.Source != "" {
			res.Verdict = snap.Source + ": " + res.Verdict
		}
	}
	out := []Result{res}
	if cfg == nil || (snap.Fail != nil && snap.Fail.Status == Unknown && snap.Node == "") {
		// (etcd mode: a store that could not list the leases gives no
		// own lease to find)
		return out
	}
	if n.extErr != nil {
		out = append(out, Result{Check: "external interface", Status: Unknown,
			Verdict: "cannot find the external interface", Cause: n.extErr.Error(),
			Fix: []string{"give weft doctor the -iface, -iface-regex and -public-ip flags weftd runs with"}})
		return out
	}
	if snap.Node != "" {
		n.own = snap.Own
		return out
	}
	var mine []subnet.Lease
	for _, l := range n.leases {
		if l.Attrs.PublicIP == n.ext.PublicIP {
			mine = append(mine, l)
		}
	}
	if env, err := subnetenv.Read(n.o.SubnetFile); err == nil {
		slices.SortStableFunc(mine, func(a, b subnet.Lease) int {
			ma, mb := a.Subnet == env.Subnet.Masked(), b.Subnet == env.Subnet.Masked()
			switch {
			case ma && !mb:
				return -1
			case mb && !ma:
				return 1
			}
			return 0
		})
	}
	if len(mine) > 0 {
		n.own = &mine[0]
	}
	return out
}

// storeUnread reports whether the store check could not read the leases.
func (n *node) storeUnread() bool {
	return n.snap != nil && n.snap.Fail != nil && n.snap.Fail.Status == Unknown
}

// checkSubnetEnv compares subnet.env with the node's lease and the config.
func (n *node) checkSubnetEnv() Result {
	res := Result{Check: "subnet.env"}
	env, err := subnetenv.Read(n.o.SubnetFile)
	if err != nil {
		res.Status, res.Verdict = Problem, "cannot read "+n.o.SubnetFile
		res.Cause = err.Error() + "; the CNI plugin reads this file on every call and fails without it"
		res.Fix = []string{"start weftd (it writes the file once it holds a lease), or give weft doctor weftd's -subnet-file"}
		return res
	}
	if n.cfg == nil {
		res.Status, res.Verdict = Unknown, fmt.Sprintf("FLANNEL_SUBNET=%s; cannot compare without the network config", env.Subnet)
		return res
	}
	if n.storeUnread() {
		res.Status, res.Verdict = Unknown, fmt.Sprintf("FLANNEL_SUBNET=%s; cannot compare without the leases", env.Subnet)
		return res
	}
	var probs []string
	if n.own == nil && n.snap.Node != "" {
		res.Status, res.Verdict = Problem, fmt.Sprintf("FLANNEL_SUBNET=%s, but Node %s gives this node no usable lease (see the store check)", env.Subnet, n.snap.Node)
		res.Cause = "in Kubernetes mode the node's lease is its Node's podCIDR with weftd's annotations; without a usable one peers do not route to this node"
		res.Fix = []string{"fix what the store check names, then restart weftd: it rewrites " + n.o.SubnetFile}
		return res
	}
	if n.own == nil {
		res.Status, res.Verdict = Problem, fmt.Sprintf("FLANNEL_SUBNET=%s, but no lease advertises this node's address %s", env.Subnet, n.ext.PublicIP)
		res.Cause = "the node's lease expired or was released while weftd was not running, or weftd runs with another -public-ip"
		res.Fix = []string{"(re)start weftd: it acquires a lease and rewrites " + n.o.SubnetFile}
		return res
	}
	if env.Subnet.Masked() != n.own.Subnet {
		probs = append(probs, fmt.Sprintf("FLANNEL_SUBNET=%s, but the node's lease is %s", env.Subnet, n.own.Subnet))
	}
	if !slices.Contains(env.Networks, n.cfg.Network) {
		probs = append(probs, fmt.Sprintf("FLANNEL_NETWORK=%v, but the network is %s", env.Networks, n.cfg.Network))
	}
	if len(probs) == 0 {
		res.Status, res.Verdict = OK, fmt.Sprintf("FLANNEL_SUBNET=%s matches the node's lease", env.Subnet)
		return res
	}
	res.Status, res.Verdict = Problem, probs[0]
	res.Details = probs
	res.Cause = "subnet.env is left from an earlier lease or network; new pods get addresses peers do not route to this node"
	res.Fix = []string{"restart weftd: it rewrites " + n.o.SubnetFile + " from its lease"}
	return res
}
