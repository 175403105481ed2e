package labbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// joinResult is what one join measured, in ms since the agent started.
type joinResult struct {
	lease, podUp, answered, allRoutes float64
}

// Convergence brings up a lab of n hosts (one pod each) and joins joins
// new hosts to it one after another, measuring for each: its agent's start
// until its lease is written, until its pod is attached, until a pod on
// host 1 gets an answer from that pod, and until every other host has a
// route to its subnet.
func (b *Bench) Convergence(ctx context.Context, n, joins int) ([]report.Measurement, error) {
	st, upCmd, _, err := b.Up(ctx, n, 1, "vxlan")
	if err != nil {
		return nil, err
	}
	defer b.Down()
	var res []joinResult
	for j := range joins {
		r, err := b.join(ctx, st, n+j+1)
		if err != nil {
			return nil, err
		}
		b.say("N=%d join %d: lease %.0f ms, pod %.0f ms, answered %.0f ms, all %d hosts routed %.0f ms", n, j+1, r.lease, r.podUp, r.answered, len(st.Hosts), r.allRoutes)
		res = append(res, r)
		st, err = lab.LoadState(b.StateDir) // not changed by the join; reloaded for clarity
		if err != nil {
			return nil, err
		}
	}
	cmd := fmt.Sprintf("%s; then a host joins (bench/labbench/convergence.go); ip netns exec %s ping -D -i 0.002 <new pod>", upCmd, st.Hosts[0].Pods[0].NS)
	pick := func(f func(joinResult) float64) []float64 {
		var s []float64
		for _, r := range res {
			s = append(s, f(r))
		}
		return s
	}
	what := func(s string) string { return fmt.Sprintf("N=%d: agent start → %s", n, s) }
	return []report.Measurement{
		{What: what("its lease written (subnet.env)"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.lease }), Command: cmd},
		{What: what("its pod attached (CNI ADD done)"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.podUp }), Command: cmd},
		{What: what("pod on host 1 answered by a pod on the new host"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.answered }), Command: cmd},
		{What: what(fmt.Sprintf("all %d hosts have its route", n)), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.allRoutes }), Command: cmd},
	}, nil
}

// join adds host k to the lab with the lab's own primitives and names (a
// namespace joined to the bridge by veth, weftd started as the lab starts
// it, one pod attached through the flannel plugin), measures it, and
// removes the agent and namespaces again.
func (b *Bench) join(ctx context.Context, st *lab.State, k int) (joinResult, error) {
	names, err := lab.NewNames(st.Prefix)
	if err != nil {
		return joinResult{}, err
	}
	addr := st.Underlay.Addr()
	for range 1 + k {
		addr = addr.Next()
	}
	dir := filepath.Join(st.StateDir, names.Host(k))
	h := lab.Host{Name: names.Host(k), NS: names.HostNS(k), Veth: names.HostVeth(k), Addr: addr,
		SubnetFile: filepath.Join(dir, "subnet.env"), DataDir: dir}
	podNS := names.PodNS(k, 1)
	defer run(context.Background(), "ip", "netns", "delete", podNS)
	defer run(context.Background(), "ip", "netns", "delete", h.NS)
	for _, argv := range [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"ip", "link", "set", h.Veth, "master", names.Bridge(), "up"},
		{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "netns", "add", podNS},
		{"ip", "-n", podNS, "link", "set", "lo", "up"},
	} {
		if _, err := run(ctx, argv...); err != nil {
			return joinResult{}, fmt.Errorf("joining %s: %w", h.Name, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return joinResult{}, err
	}
	// Watch every other host's routes before the agent starts.
	var peers []string
	for _, p := range st.Hosts {
		peers = append(peers, p.NS)
	}
	rw, err := watchRoutes(peers)
	if err != nil {
		return joinResult{}, err
	}
	defer rw.close()

	logf, err := os.OpenFile(filepath.Join(dir, "weftd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return joinResult{}, err
	}
	defer logf.Close()
	t0 := time.Now()
	agent, err := start(nsArgv(h.NS, filepath.Join(st.BinDir, "weftd"),
		"-etcd-endpoints", "http://"+st.BridgeAddr.String()+":"+strconv.Itoa(st.EtcdPort),
		"-etcd-prefix", lab.EtcdPrefix, "-iface", "eth0", "-public-ip", addr.String(),
		"-subnet-file", h.SubnetFile, "-ip-masq", "-healthz-ip", addr.String(),
		"-healthz-port", strconv.Itoa(st.HealthzPort), "-log-level", "info"), logf)
	if err != nil {
		return joinResult{}, err
	}
	defer stop(agent)

	var r joinResult
	sn, err := waitSubnet(ctx, h.SubnetFile, 30*time.Second)
	if err != nil {
		return r, err
	}
	r.lease = ms(time.Since(t0))
	c, err := newHostCNI(h, st.BinDir)
	if err != nil {
		return r, err
	}
	podAddr, err := c.add(ctx, "join", podNS)
	if err != nil {
		return r, err
	}
	r.podUp = ms(time.Since(t0))
	answered, err := firstReply(ctx, st.Hosts[0].Pods[0].NS, podAddr, 30*time.Second)
	if err != nil {
		return r, err
	}
	r.answered = ms(answered.Sub(t0))
	last, err := rw.waitAll(sn, 30*time.Second)
	if err != nil {
		return r, err
	}
	r.allRoutes = ms(last.Sub(t0))
	_ = c.del(ctx, "join", podNS)
	return r, nil
}

// waitSubnet polls a subnet.env every 2 ms until it names a subnet.
func waitSubnet(ctx context.Context, path string, timeout time.Duration) (netip.Prefix, error) {
	deadline := time.Now().Add(timeout)
	for {
		if env, err := subnetenv.Read(path); err == nil {
			return env.Subnet.Masked(), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return netip.Prefix{}, fmt.Errorf("no lease in %s after %s", path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// firstReply pings to from the namespace ns every 2 ms and returns the
// time of the first reply, as ping -D stamps it.
func firstReply(ctx context.Context, ns string, to netip.Addr, timeout time.Duration) (time.Time, error) {
	pr, pw := io.Pipe()
	ping, err := start(nsArgv(ns, "ping", "-n", "-D", "-i", "0.002", "-W", "1", "-w", strconv.Itoa(int(timeout.Seconds())), to.String()), pw)
	if err != nil {
		return time.Time{}, err
	}
	go func() { _ = ping.Wait(); pw.Close() }()
	defer func() { _ = ping.Process.Kill() }()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if t, ok := parseReply(sc.Text()); ok {
			go io.Copy(io.Discard, pr) // let ping run to its kill
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("no reply from %s to pings from %s within %s", to, ns, timeout)
}

// parseReply parses a `ping -D` reply line such as
// "[1732590000.123456] 64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.1 ms".
func parseReply(line string) (time.Time, bool) {
	if !strings.HasPrefix(line, "[") || !strings.Contains(line, " bytes from ") {
		return time.Time{}, false
	}
	stamp, _, ok := strings.Cut(line[1:], "]")
	if !ok {
		return time.Time{}, false
	}
	sec, frac, _ := strings.Cut(stamp, ".")
	s, err1 := strconv.ParseInt(sec, 10, 64)
	us, err2 := strconv.ParseInt((frac + "000000")[:6], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, false
	}
	return time.Unix(s, us*1000), true
}

// routeWatch records, per namespace, when each route destination was
// first added.
type routeWatch struct {
	mu    sync.Mutex
	seen  []map[netip.Prefix]time.Time
	done  chan struct{}
	wg    sync.WaitGroup
	names []string
}

// watchRoutes subscribes to route changes in each named namespace.
func watchRoutes(nss []string) (*routeWatch, error) {
	w := &routeWatch{done: make(chan struct{}), names: nss}
	for i, name := range nss {
		w.seen = append(w.seen, map[netip.Prefix]time.Time{})
		h, err := netns.GetFromName(name)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("opening namespace %s: %w", name, err)
		}
		ch := make(chan netlink.RouteUpdate, 1024)
		err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{Namespace: &h})
		h.Close()
		if err != nil {
			w.close()
			return nil, fmt.Errorf("watching routes in %s: %w", name, err)
		}
		w.wg.Go(func() {
			for u := range ch {
				if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
					continue
				}
				a, ok := netip.AddrFromSlice(u.Dst.IP)
				ones, _ := u.Dst.Mask.Size()
				if !ok {
					continue
				}
				p := netip.PrefixFrom(a.Unmap(), ones).Masked()
				now := time.Now()
				w.mu.Lock()
				if _, dup := w.seen[i][p]; !dup {
					w.seen[i][p] = now
				}
				w.mu.Unlock()
			}
		})
	}
	return w, nil
}

// waitAll waits until every namespace has a route to p and returns when
// the last one got it.
func (w *routeWatch) waitAll(p netip.Prefix, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		var last time.Time
		missing := ""
		for i, m := range w.seen {
			t, ok := m[p]
			if !ok {
				missing = w.names[i]
				break
			}
			if t.After(last) {
				last = t
			}
		}
		w.mu.Unlock()
		if missing == "" {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s has no route to %s after %s", missing, p, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close ends the subscriptions and waits for their readers.
func (w *routeWatch) close() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}
