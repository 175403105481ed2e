package labbench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/ops/lab"
)

// hostCNI runs CNI operations for one lab host with the same conflist the
// lab uses (flannel, naming the host's own subnet.env and data dirs).
type hostCNI struct {
	host lab.Host
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

func newHostCNI(h lab.Host, binDir string) (*hostCNI, error) {
	b, err := lab.ConfList(h)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parsing the CNI config of %s: %w", h.Name, err)
	}
	// An explicit exec: libcni's lazy default races under concurrent use.
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(h.DataDir, "cache"), &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	})
	return &hostCNI{host: h, list: list, cni: cni}, nil
}

func runtimeConf(id, ns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: filepath.Join("/var/run/netns", ns), IfName: "eth0"}
}

// add attaches the pod namespace ns as container id and returns its IPv4
// address.
func (c *hostCNI) add(ctx context.Context, id, ns string) (netip.Addr, error) {
	var res *types100.Result
	err := inNS(c.host.NS, func() error {
		r, err := c.cni.AddNetworkList(ctx, c.list, runtimeConf(id, ns))
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("CNI ADD of %s on %s: %w", ns, c.host.Name, err)
	}
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("CNI ADD of %s on %s returned no IPv4 address", ns, c.host.Name)
}

// del detaches container id from the pod namespace ns.
func (c *hostCNI) del(ctx context.Context, id, ns string) error {
	if err := inNS(c.host.NS, func() error { return c.cni.DelNetworkList(ctx, c.list, runtimeConf(id, ns)) }); err != nil {
		return fmt.Errorf("CNI DEL of %s on %s: %w", ns, c.host.Name, err)
	}
	return nil
}

// CNI measures ADD and DEL latency through libcni on a one-host lab with
// the lab's own conflist: seq ADD+DEL cycles one after the other, then
// rounds of par ADDs at once followed by par DELs at once.
func (b *Bench) CNI(ctx context.Context, seq, par, rounds int) ([]report.Measurement, error) {
	st, upCmd, _, err := b.Up(ctx, 1, 0, "vxlan")
	if err != nil {
		return nil, err
	}
	defer b.Down()
	h := st.Hosts[0]
	c, err := newHostCNI(h, st.BinDir)
	if err != nil {
		return nil, err
	}
	names, err := lab.NewNames(st.Prefix)
	if err != nil {
		return nil, err
	}
	// Pod namespaces named like the lab's, so that `weft lab down` removes them.
	pods := make([]string, par)
	for j := range pods {
		pods[j] = names.PodNS(1, j+1)
		if _, err := run(ctx, "ip", "netns", "add", pods[j]); err != nil {
			return nil, err
		}
		defer run(context.Background(), "ip", "netns", "delete", pods[j])
	}
	// One untimed cycle creates cni0 and warms the caches.
	if _, err := c.add(ctx, "warm", pods[0]); err != nil {
		return nil, err
	}
	if err := c.del(ctx, "warm", pods[0]); err != nil {
		return nil, err
	}
	timed := func(f func() error) (float64, error) {
		t0 := time.Now()
		err := f()
		return ms(time.Since(t0)), err
	}
	var seqAdd, seqDel []float64
	for i := range seq {
		id, ns := "seq-"+strconv.Itoa(i), pods[i%par]
		a, err := timed(func() error { _, err := c.add(ctx, id, ns); return err })
		if err != nil {
			return nil, err
		}
		d, err := timed(func() error { return c.del(ctx, id, ns) })
		if err != nil {
			return nil, err
		}
		seqAdd, seqDel = append(seqAdd, a), append(seqDel, d)
	}
	b.say("CNI: %d sequential ADD+DEL done", seq)
	var parAdd, parDel []float64
	for r := range rounds {
		ids := make([]string, par)
		for j := range ids {
			ids[j] = fmt.Sprintf("par-%d-%d", r, j)
		}
		a, err := parallel(par, func(j int) error { _, err := c.add(ctx, ids[j], pods[j]); return err })
		if err != nil {
			return nil, err
		}
		d, err := parallel(par, func(j int) error { return c.del(ctx, ids[j], pods[j]) })
		if err != nil {
			return nil, err
		}
		parAdd, parDel = append(parAdd, a...), append(parDel, d...)
	}
	b.say("CNI: %d rounds of %d parallel ADDs and DELs done", rounds, par)
	cmd := upCmd + "; libcni ADD/DEL of the lab's flannel conflist in " + h.NS + " (bench/labbench/cni.go)"
	var out []report.Measurement
	for _, s := range []struct {
		what    string
		samples []float64
	}{
		{"ADD, sequential", seqAdd}, {"DEL, sequential", seqDel},
		{fmt.Sprintf("ADD, %d in parallel", par), parAdd}, {fmt.Sprintf("DEL, %d in parallel", par), parDel},
	} {
		for _, stat := range []string{"median", "p95"} {
			out = append(out, report.Measurement{What: "lab host, libcni: " + s.what + " (" + stat + ")", Unit: "ms", Stat: stat, Samples: s.samples, Command: cmd})
		}
	}
	return out, nil
}

// parallel runs fn(0..n-1) at once and returns each call's latency in ms.
func parallel(n int, fn func(j int) error) ([]float64, error) {
	lat := make([]float64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for j := range n {
		wg.Go(func() {
			t0 := time.Now()
			errs[j] = fn(j)
			lat[j] = ms(time.Since(t0))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}
