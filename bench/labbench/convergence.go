package labbench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// joinResult is what one join measured, in ms since the agent started,
// and the floor under it measured on the same new host just before.
type joinResult struct {
	lease, podUp, answered, allRoutes float64
	// inEtcd is when a watch beside the agents saw the new lease's put.
	inEtcd float64
	floor  joinFloor
}

// joinFloor is the floor under a join, measured on the new host before its
// agent starts: the median of floorRuns execs of `weftd -version` through
// `ip netns exec` (as the agent is started) until it exits, and the median
// of floorRuns Gets of the network config key from inside the host's
// namespace on an open connection (the agent's first request).
type joinFloor struct {
	exec, etcd float64
}

// floorRuns is how many of each floor measurement one join takes.
const floorRuns = 5

// Convergence brings up a lab of n hosts (one pod each) and joins joins
// new hosts to it one after another, measuring for each: its agent's start
// until its lease is in etcd, until its lease is written (subnet.env),
// until its pod is attached, until a pod on host 1 gets an answer from that
// pod, and until every other host has a route to its subnet; and beside
// them the floor on the same new host (joinFloor).
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
		b.say("N=%d join %d: in etcd %.0f ms, lease %.0f ms, pod %.0f ms, answered %.0f ms, all %d hosts routed %.0f ms; floor: exec %.1f ms + etcd %.1f ms",
			n, j+1, r.inEtcd, r.lease, r.podUp, r.answered, len(st.Hosts), r.allRoutes, r.floor.exec, r.floor.etcd)
		res = append(res, r)
		st, err = lab.LoadState(b.StateDir) // not changed by the join; reloaded for clarity
		if err != nil {
			return nil, err
		}
	}
	cmd := fmt.Sprintf("%s; then a host joins (bench/labbench/convergence.go); ip netns exec %s ping -D -i 0.002 <new pod>", upCmd, st.Hosts[0].Pods[0].NS)
	floorCmd := fmt.Sprintf("%s; on each new host before its agent starts, %d× ip netns exec <new host> bin/weftd -version and %d× an etcd Get of %s/config from inside <new host> (bench/labbench/convergence.go)", upCmd, floorRuns, floorRuns, lab.EtcdPrefix)
	pick := func(f func(joinResult) float64) []float64 {
		var s []float64
		for _, r := range res {
			s = append(s, f(r))
		}
		return s
	}
	what := func(s string) string { return fmt.Sprintf("N=%d: agent start → %s", n, s) }
	execF := report.Measurement{What: fmt.Sprintf("N=%d: floor: exec of weftd on the new host until it exits (ip netns exec … weftd -version)", n),
		Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.floor.exec }), Command: floorCmd}
	etcdF := report.Measurement{What: fmt.Sprintf("N=%d: floor: one etcd round trip from the new host (Get of the config key, connection open)", n),
		Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.floor.etcd }), Command: floorCmd}
	floor := report.Measurement{What: "floor (exec + one etcd round trip)",
		Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.floor.exec + r.floor.etcd }), Command: floorCmd}
	floorRow := floor
	floorRow.What = fmt.Sprintf("N=%d: floor: exec + one etcd round trip (the two above, summed per join)", n)
	return []report.Measurement{
		execF, etcdF, floorRow,
		{What: what("its lease in etcd (a watch beside the agents sees the put)"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.inEtcd }), Baseline: &floor, Command: cmd},
		{What: what("its lease written (subnet.env) (target 40 ms)"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.lease }), Baseline: &floor, Command: cmd},
		{What: what("its pod attached (CNI ADD done)"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.podUp }), Command: cmd},
		{What: what("pod on host 1 answered by a pod on the new host"), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.answered }), Command: cmd},
		{What: what(fmt.Sprintf("all %d hosts have its route (target 50 ms)", n)), Unit: "ms", Stat: "median", Samples: pick(func(r joinResult) float64 { return r.allRoutes }), Baseline: &floor, Command: cmd},
		{What: fmt.Sprintf("N=%d: its lease in etcd → all %d hosts have its route (the other agents' watch → Set)", n, n), Unit: "ms", Stat: "median",
			Samples: pick(func(r joinResult) float64 { return r.allRoutes - r.inEtcd }), Command: cmd},
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
	etcdURL := "http://" + st.BridgeAddr.String() + ":" + strconv.Itoa(st.EtcdPort)
	cli, err := nsEtcdClient(h.NS, etcdURL)
	if err != nil {
		return joinResult{}, err
	}
	defer cli.Close()
	fl, err := b.joinFloor(ctx, h.NS, cli)
	if err != nil {
		return joinResult{}, fmt.Errorf("floor on %s: %w", h.Name, err)
	}
	lw, err := watchLease(ctx, cli, addr)
	if err != nil {
		return joinResult{}, fmt.Errorf("%s: %w", h.Name, err)
	}
	defer lw.stop()
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
		"-etcd-endpoints", etcdURL,
		"-etcd-prefix", lab.EtcdPrefix, "-iface", "eth0", "-public-ip", addr.String(),
		"-subnet-file", h.SubnetFile, "-ip-masq", "-healthz-ip", addr.String(),
		"-healthz-port", strconv.Itoa(st.HealthzPort), "-log-level", "info"), logf)
	if err != nil {
		return joinResult{}, err
	}
	defer stop(agent)

	r := joinResult{floor: fl}
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
	put, err := lw.wait(5 * time.Second)
	if err != nil {
		return r, err
	}
	r.inEtcd = ms(put.Sub(t0))
	_ = c.del(ctx, "join", podNS)
	return r, nil
}

// joinFloor measures the floor under a join on the host namespace ns
// before its agent starts (see joinFloor the type): the same exec the
// agent's start makes, and the same Get its first request makes, with cli,
// a client whose connection is made from inside the namespace.
func (b *Bench) joinFloor(ctx context.Context, ns string, cli *clientv3.Client) (joinFloor, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return joinFloor{}, err
	}
	defer devnull.Close()
	var execs, gets []float64
	argv := nsArgv(ns, filepath.Join(b.Bin, "weftd"), "-version")
	for range floorRuns {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = devnull, devnull
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return joinFloor{}, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		execs = append(execs, ms(time.Since(t0)))
	}
	key := lab.EtcdPrefix + "/config"
	for i := range floorRuns + 1 {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		_, err := cli.Get(gctx, key)
		d := time.Since(t0)
		cancel()
		if err != nil {
			return joinFloor{}, fmt.Errorf("etcd Get %s from %s: %w", key, ns, err)
		}
		if i > 0 { // the first one opens the connection
			gets = append(gets, ms(d))
		}
	}
	return joinFloor{exec: report.Quantile(execs, 0.5), etcd: report.Quantile(gets, 0.5)}, nil
}

// nsEtcdClient returns an etcd client of url whose connections are made
// from inside the namespace ns: sockets belong to the namespace of the
// thread that makes them, so it dials from a thread switched into ns.
func nsEtcdClient(ns, url string) (*clientv3.Client, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop(), DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s from %s: %w", url, ns, err)
	}
	return cli, nil
}

// leaseWatch records when etcd first tells of a lease put for one public
// address.
type leaseWatch struct {
	cancel context.CancelFunc
	seen   chan time.Time // receives that time once
}

// watchLease watches the lab's subnets prefix for a put of a lease whose
// value holds the public address addr; it returns once the watch is in
// place.
func watchLease(ctx context.Context, cli *clientv3.Client, addr netip.Addr) (*leaseWatch, error) {
	wctx, cancel := context.WithCancel(ctx)
	prefix := etcd.SubnetsPrefix(lab.EtcdPrefix)
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp, ok := <-wch:
		if !ok || resp.Err() != nil || !resp.Created {
			cancel()
			return nil, fmt.Errorf("watching %s: %v", prefix, resp.Err())
		}
	case <-time.After(5 * time.Second):
		cancel()
		return nil, fmt.Errorf("watching %s: not in place after 5 s", prefix)
	}
	w := &leaseWatch{cancel: cancel, seen: make(chan time.Time, 1)}
	want := []byte(`"PublicIP":"` + addr.String() + `"`)
	go func() {
		for resp := range wch {
			now := time.Now()
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut && bytes.Contains(ev.Kv.Value, want) {
					w.seen <- now
					cancel()
					for range wch { // until the watch has closed
					}
					return
				}
			}
		}
	}()
	return w, nil
}

// wait returns when the watch saw the put.
func (w *leaseWatch) wait(timeout time.Duration) (time.Time, error) {
	select {
	case t := <-w.seen:
		return t, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("no put of the new lease seen in etcd after %s", timeout)
	}
}

func (w *leaseWatch) stop() { w.cancel() }

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
