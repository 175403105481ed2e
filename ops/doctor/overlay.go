package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/kernel/netlinkx"
)

// checkOverlay asks the backend what its Set would change (the dry run) and
// reports the device findings and the kernel entries that differ from the
// peers' leases.
func (n *node) checkOverlay(ctx context.Context, extErr error) []Result {
	dev := Result{Check: "overlay device"}
	kern := Result{Check: "routes, neighbours, fdb"}
	cannot := func(why string) []Result {
		dev.Status, dev.Verdict = Unknown, "cannot check: "+why
		kern.Status, kern.Verdict = Unknown, "cannot check: "+why
		return []Result{dev, kern}
	}
	switch {
	case n.cfg == nil:
		return cannot("no network config")
	case extErr != nil:
		return cannot("no external interface")
	case n.own == nil:
		return cannot("this node holds no lease")
	}
	spec, err := n.o.Backends(n.cfg.BackendType)
	if err != nil {
		return cannot(err.Error())
	}
	if spec.Plan == nil {
		return cannot("backend " + n.cfg.BackendType + " cannot say what it would change")
	}
	pl, err := spec.Plan(ctx, backend.Params{Config: n.cfg, Ext: n.ext, Log: n.o.Log}, backend.State{Own: *n.own, Peers: n.leases})
	if err != nil {
		return cannot(err.Error())
	}
	n.plan = &pl

	switch {
	case n.device == "":
		dev.Status, dev.Verdict = Skipped, "backend "+n.cfg.BackendType+" has no overlay device"
	case len(pl.Device) == 0 && n.cfg.BackendType == wireguard.TypeName:
		dev.Status, dev.Verdict = OK, n.device+" exists, is up and matches the config (MTU, address, engine)"
	case len(pl.Device) == 0:
		dev.Status, dev.Verdict = OK, n.device+" exists, is up and matches the config (VNI, port, local address, underlay, MTU, MAC)"
	default:
		dev.Status, dev.Verdict = Problem, pl.Device[0]
		dev.Details = pl.Device
		dev.Cause = n.device + " is not as the network config and the node's lease say; packets to and from peers are lost or fragmented"
		dev.Fix = []string{"restart weftd: it recreates or corrects " + n.device + " (an incompatible device is replaced, with the MAC of the lease)"}
		if strings.Contains(pl.Device[0], "does not exist") {
			dev.Cause = n.device + " was deleted after weftd started, or weftd is not running"
		}
	}

	if len(pl.Changes) == 0 {
		kern.Status = OK
		kern.Verdict = fmt.Sprintf("the kernel matches the leases of %d peers", len(n.peers()))
		return []Result{dev, kern}
	}
	counts := map[netlinkx.ChangeKind]int{}
	for _, c := range pl.Changes {
		counts[c.Kind]++
		kern.Details = append(kern.Details, c.String())
	}
	kern.Status = Problem
	kern.Verdict = fmt.Sprintf("%d missing, %d stale, %d extra entries against the peers' leases", counts[netlinkx.Missing], counts[netlinkx.Stale], counts[netlinkx.Extra])
	kern.Cause = "someone changed the agent's routes, neighbours or FDB entries, or the agent is not running or cannot write them; a missing entry loses the traffic to that peer"
	kern.Fix = []string{"weftd repairs these on the next netlink event or within -resync-interval; if they stay, see its log (journalctl -u weftd) and restart it"}
	return []Result{dev, kern}
}
