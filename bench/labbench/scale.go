package labbench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
)

// scaleNetwork has room for 65,535 /24 leases.
const scaleNetwork = "10.0.0.0/8"

// Idle fills the etcd of a one-host lab with synthetic vxlan peers, first
// counts[0] of them, then up to counts[1], ..., and after each step waits
// until the host's agent has a route to every peer, lets it settle for a
// second, and measures its CPU over window (by the process's CPU clock, in
// nanoseconds; the figure's note gives the resolution) and its resident
// memory. The peers only fill routes, neighbours and FDB entries: no
// packet goes to their public addresses.
func (b *Bench) Idle(ctx context.Context, counts []int, window time.Duration) ([]report.Measurement, error) {
	st, upCmd, pid, store, done, err := b.oneHost(ctx, "vxlan")
	if err != nil {
		return nil, err
	}
	defer done()
	h := st.Hosts[0]
	res, err := procstat.Resolution(pid)
	if err != nil {
		return nil, err
	}
	cmd := upCmd + "; synthetic vxlan leases put into its etcd (bench/labbench/scale.go); CPU from the process CPU clock of host1's weftd"
	var out []report.Measurement
	have := 0
	for _, n := range counts {
		prev := have
		t0 := time.Now()
		if err := putPeers(ctx, store, prev, n); err != nil {
			return nil, err
		}
		if err := waitRoutes(ctx, h.NS, n, time.Minute); err != nil {
			return nil, err
		}
		prog := time.Since(t0)
		have = n
		time.Sleep(time.Second)
		idle, took, rss, err := idleSample(pid, window)
		if err != nil {
			return nil, err
		}
		resPct := float64(res) / float64(took) * 100
		b.say("%d peers: programmed in %s, idle CPU %.4f%% over %s, RSS %.1f MB", n, prog.Round(time.Millisecond), idle, took.Round(time.Millisecond), float64(rss)/(1<<20))
		what := fmt.Sprintf("lab host's agent with %d peers", n)
		out = append(out,
			report.Measurement{What: what + ": idle CPU over " + window.String(), Unit: "% of a CPU", Stat: "median", Samples: []float64{idle}, Command: cmd,
				Note: fmt.Sprintf("process CPU clock, resolution %s = %s %% of a CPU over %s", res, report.Number(resPct), took.Round(time.Millisecond))},
			report.Measurement{What: what + ": resident memory", Unit: "MB", Stat: "median", Samples: []float64{float64(rss) / (1 << 20)}, Command: cmd},
			report.Measurement{What: fmt.Sprintf("lab host's agent with %d peers: %d more leases put into etcd → all %d routes in its kernel", prev, n-prev, n), Unit: "ms", Stat: "median", Samples: []float64{ms(prog)}, Command: cmd},
		)
	}
	return out, nil
}

// peerLease returns the i-th synthetic peer: subnet 10.x.y.0/24 from i+1,
// public IP in 172.31.0.0/16.
func peerLease(i int) subnet.Lease {
	n := i + 1
	sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 0}), 24)
	pub := netip.AddrFrom4([4]byte{172, 31, byte(n >> 8), byte(n)})
	mac := fmt.Sprintf("0a:58:%02x:%02x:%02x:01", byte(n>>16), byte(n>>8), byte(n))
	return subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: pub, BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

// putPeers writes peers [from, to) through the store.
func putPeers(ctx context.Context, st *etcd.Store, from, to int) error {
	leases := make([]subnet.Lease, 0, to-from)
	for i := from; i < to; i++ {
		leases = append(leases, peerLease(i))
	}
	if err := st.PutReservations(ctx, leases); err != nil {
		return fmt.Errorf("writing synthetic leases: %w", err)
	}
	return nil
}

// waitRoutes polls the namespace's main table every 50 ms until it holds
// at least n routes to /24s inside 10.0.0.0/8 other than the host's own.
func waitRoutes(ctx context.Context, ns string, n int, timeout time.Duration) error {
	nh, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer nh.Close()
	h, err := netlink.NewHandleAt(nh)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer h.Close()
	net8 := netip.MustParsePrefix(scaleNetwork)
	deadline := time.Now().Add(timeout)
	got := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err == nil || err == netlink.ErrDumpInterrupted {
			got = 0
			for _, r := range routes {
				if r.Dst == nil || r.Gw == nil {
					continue
				}
				ones, _ := r.Dst.Mask.Size()
				if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && ones == 24 && net8.Contains(a.Unmap()) {
					got++
				}
			}
			if got >= n && err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s has %d of %d peer routes after %s", ns, got, n, timeout)
}

// oneHost brings up a lab of one host with the given backend on
// scaleNetwork and returns its state, the command that made it, the host
// agent's PID and a store on the lab's etcd; done closes the store and
// takes the lab down.
func (b *Bench) oneHost(ctx context.Context, backend string) (st *lab.State, upCmd string, pid int, store *etcd.Store, done func(), err error) {
	st, upCmd, _, err = b.Up(ctx, 1, 0, backend, "--network", scaleNetwork)
	if err != nil {
		return nil, "", 0, nil, nil, err
	}
	for _, p := range st.Procs {
		if p.Name == st.Hosts[0].Name {
			pid = p.PID
		}
	}
	store, err = etcd.New(etcd.Options{Endpoints: []string{"http://127.0.0.1:" + strconv.Itoa(st.EtcdPort)}, Prefix: lab.EtcdPrefix, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Down()
		return nil, "", 0, nil, nil, fmt.Errorf("connecting to the lab's etcd: %w", err)
	}
	return st, upCmd, pid, store, func() { store.Close(); b.Down() }, nil
}

// idleSample measures pid's CPU over window, as a percentage of one CPU,
// and its resident memory after it.
func idleSample(pid int, window time.Duration) (idlePct float64, took time.Duration, rss int64, err error) {
	c0, err := procstat.CPU(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	w0 := time.Now()
	time.Sleep(window)
	c1, err := procstat.CPU(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	took = time.Since(w0)
	if rss, err = procstat.RSS(pid); err != nil {
		return 0, 0, 0, err
	}
	return float64(c1-c0) / float64(took) * 100, took, rss, nil
}
