package lab

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// LeaseRenderer prints the leases of the etcd at endpoint under prefix; the
// CLI passes the `weft leases` table so that status shows the same thing.
type LeaseRenderer func(ctx context.Context, endpoint, prefix string) error

// Status prints the lab's hosts, processes and leases.
func Status(ctx context.Context, o Options, leases LeaseRenderer) error {
	if _, err := o.check(); err != nil {
		return err
	}
	st, err := LoadState(o.StateDir)
	if err != nil {
		return err
	}
	state := "ready"
	if !st.Ready {
		state = "NOT READY (up did not finish; `weft lab down` removes it)"
	}
	fw := "iptables"
	if st.NFTables {
		fw = "nftables"
	}
	nets := st.Network.String()
	switch {
	case st.NoIPv4:
		nets = st.IPv6Network.String() + " (IPv6 only)"
	case st.IPv6Network.IsValid():
		nets += " and " + st.IPv6Network.String()
	}
	fmt.Fprintf(o.Out, "lab %q: %s, made %s, backend %s, firewall %s, network %s, underlay %s on %s\n\n",
		st.Prefix, state, st.Created.Format(time.DateTime), st.Backend, fw, nets, st.Underlay, st.Prefix+"-br")
	if err := RenderHosts(o.Out, hostRows(st)); err != nil {
		return err
	}
	fmt.Fprintln(o.Out)
	endpoint := "http://127.0.0.1:" + strconv.Itoa(st.EtcdPort)
	for _, p := range st.Procs {
		alive := "dead"
		if ownsProcess(p.PID, st.StateDir) {
			alive = "running"
		}
		switch p.Name {
		case "etcd":
			fmt.Fprintf(o.Out, "etcd: pid %d %s, %s (log %s)\n", p.PID, alive, endpoint, p.Log)
		case "kube-apiserver":
			fmt.Fprintf(o.Out, "kube-apiserver: pid %d %s, %s (log %s)\n", p.PID, alive, st.Kube.plane(st).URL(), p.Log)
		case "kube-controller-manager":
			fmt.Fprintf(o.Out, "kube-controller-manager: pid %d %s (log %s)\n", p.PID, alive, p.Log)
		}
	}
	fmt.Fprintln(o.Out)
	if st.Kube != nil {
		fmt.Fprintf(o.Out, "Kubernetes mode: kubeconfig %s, net-conf.json %s\n\n", st.Kube.Kubeconfig, st.Kube.NetConf)
		if o.KubeLeases != nil {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := o.KubeLeases(lctx, st.Kube.Kubeconfig, st.Kube.NetConf); err != nil {
				fmt.Fprintf(o.Out, "leases: %v\n", err)
			}
		}
		return nil
	}
	if leases != nil {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := leases(lctx, endpoint, EtcdPrefix); err != nil {
			fmt.Fprintf(o.Out, "leases: %v\n", err)
		}
	}
	return nil
}

// Check pings every pod from every other pod once, prints the matrix and
// returns an error unless every ping was answered.
func Check(ctx context.Context, o Options) error {
	if _, err := o.check(); err != nil {
		return err
	}
	st, err := LoadState(o.StateDir)
	if err != nil {
		return err
	}
	start := time.Now()
	ms := matrices(ctx, st, pingFromNS, time.Time{})
	if len(ms) == 0 {
		return fmt.Errorf("lab %q has no attached pods to ping", st.Prefix)
	}
	failures, pings := 0, 0
	for i, m := range ms {
		if i > 0 {
			fmt.Fprintln(o.Out)
		}
		if err := renderFamilyMatrix(o.Out, m, len(ms) > 1); err != nil {
			return err
		}
		failures += m.Failures()
		pings += len(m.Pods) * (len(m.Pods) - 1)
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d pings unanswered", failures, pings)
	}
	fmt.Fprintf(o.Out, "\nevery ping answered (%d pings in %s)\n", pings, time.Since(start).Round(time.Millisecond))
	return nil
}
