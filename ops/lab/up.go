package lab

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// EtcdPrefix is the etcd prefix of the lab's network.
const EtcdPrefix = "/coreos.com/network"

// defaultEtcdPort is the loopback port the default lab's etcd prefers.
const defaultEtcdPort = 12379

// healthzPort is where each host's weftd serves /healthz and /readyz, on
// the host's underlay address.
const healthzPort = 8471

// Options configures the lab commands.
type Options struct {
	Hosts   int
	Pods    int
	Backend string       // "vxlan", "host-gw" or "wireguard"
	Network netip.Prefix // the cluster network (IPv4)
	// IPv6Network, when valid, turns IPv6 on: a dual-stack lab, or an
	// IPv6-only one with NoIPv4.
	IPv6Network netip.Prefix
	NoIPv4      bool
	// NFTables runs the hosts' firewall rules in nftables mode
	// (EnableNFTables in the network config) instead of iptables.
	NFTables bool
	// BinDir holds weftd, flannel and the delegate CNI plugins.
	BinDir string
	// Self is the weft executable, re-run as the lab's etcd process.
	Self     string
	StateDir string
	Prefix   string
	// Kube runs the hosts in Kubernetes mode: a kube-apiserver and a
	// kube-controller-manager from KubeBinDir over the lab's etcd, a Node
	// per host, weftd with -kube-subnet-mgr.
	Kube       bool
	KubeBinDir string
	// KubeLeases, for Status in Kubernetes mode, prints the leases read
	// from the Nodes (the CLI passes `weft leases -kube-subnet-mgr`).
	KubeLeases func(ctx context.Context, kubeconfig, netConf string) error
	// Timeout bounds Up as a whole.
	Timeout time.Duration
	// Out receives progress, tables and hints.
	Out io.Writer
}

// ErrRunning is returned by Up when a lab already exists in the state dir.
var ErrRunning = errors.New("a lab is already running")

// requiredBins are the programs Up runs from BinDir.
var requiredBins = []string{"weftd", "flannel", "bridge", "host-local"}

func (o *Options) check() (Names, error) {
	n, err := NewNames(o.Prefix)
	if err != nil {
		return Names{}, err
	}
	if o.StateDir == "" || !filepath.IsAbs(o.StateDir) || filepath.Clean(o.StateDir) == "/" {
		return Names{}, fmt.Errorf("lab state dir %q: want an absolute path other than /", o.StateDir)
	}
	o.StateDir = filepath.Clean(o.StateDir)
	if o.Out == nil {
		o.Out = io.Discard
	}
	return n, nil
}

func (o *Options) checkUp() error {
	if o.Hosts < 1 || o.Hosts > maxHosts {
		return fmt.Errorf("--hosts %d: want 1 to %d", o.Hosts, maxHosts)
	}
	if o.Pods < 0 || o.Pods > maxPods {
		return fmt.Errorf("--pods %d: want 0 to %d", o.Pods, maxPods)
	}
	if o.Backend != "vxlan" && o.Backend != "host-gw" && o.Backend != "wireguard" {
		return fmt.Errorf("--backend %q: want vxlan, host-gw or wireguard", o.Backend)
	}
	if !o.NoIPv4 && (!o.Network.IsValid() || !o.Network.Addr().Is4() || o.Network.Bits() > 22 || o.Network.Masked() != o.Network) {
		return fmt.Errorf("--network %s: want an IPv4 network of /22 or larger, e.g. 10.244.0.0/16", o.Network)
	}
	if o.NoIPv4 && !o.IPv6Network.IsValid() {
		return errors.New("an IPv6-only lab needs an IPv6 network")
	}
	if o.IPv6Network.IsValid() && (!o.IPv6Network.Addr().Is6() || o.IPv6Network.Addr().Is4In6() || o.IPv6Network.Bits() > 56 || o.IPv6Network.Masked() != o.IPv6Network) {
		return fmt.Errorf("--ipv6-network %s: want an IPv6 network of /56 or larger, e.g. fd00:10:244::/56", o.IPv6Network)
	}
	if o.Kube {
		if o.NoIPv4 {
			// kube-apiserver wants its advertise address (the bridge's
			// IPv4 address) in the family of its service range.
			return errors.New("--kube --ipv6: the lab's Kubernetes mode is IPv4 or dual-stack (its kube-apiserver listens on the IPv4 bridge address); use --kube --dual-stack, or --ipv6 without --kube")
		}
		if err := kubecp.CheckBinDir(o.KubeBinDir); err != nil {
			return fmt.Errorf("--kube needs kube-apiserver and kube-controller-manager: %w", err)
		}
	}
	for _, b := range requiredBins {
		p := filepath.Join(o.BinDir, b)
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is missing or not executable: build it with `make`, or point --bin-dir at the directory that holds weftd, flannel, bridge and host-local", p)
		}
	}
	return nil
}

// networkConfig returns the JSON written to <prefix>/config: IPv4 on
// network (unless noIPv4), IPv6 on ipv6Network when it is valid, the
// firewall in nftables mode with nft.
func networkConfig(network, ipv6Network netip.Prefix, noIPv4 bool, backend string, nft bool) string {
	return netConfig(network, ipv6Network, noIPv4, backend, nft, true)
}

// netConfig is networkConfig, with the subnet lengths only when
// subnetLens: Kubernetes mode takes each node's subnets from its
// podCIDRs and ignores them.
func netConfig(network, ipv6Network netip.Prefix, noIPv4 bool, backend string, nft, subnetLens bool) string {
	b := `{"Type":"vxlan","VNI":1,"Port":8472}`
	switch backend {
	case "host-gw":
		b = `{"Type":"host-gw"}`
	case "wireguard":
		b = `{"Type":"wireguard"}`
	}
	var fam string
	if !noIPv4 {
		fam = fmt.Sprintf(`"Network":%q,`, network.String())
		if subnetLens {
			fam += `"SubnetLen":24,`
		}
	} else {
		fam = `"EnableIPv4":false,`
	}
	if ipv6Network.IsValid() {
		fam += fmt.Sprintf(`"EnableIPv6":true,"IPv6Network":%q,`, ipv6Network.String())
		if subnetLens {
			fam += `"IPv6SubnetLen":64,`
		}
	}
	if nft {
		fam += `"EnableNFTables":true,`
	}
	return fmt.Sprintf(`{%s"Backend":%s}`, fam, b)
}

// ipv6Underlay is the IPv6 underlay of every lab's hosts (each lab has
// its own bridge, and no address of it is in the root namespace).
var ipv6Underlay = netip.MustParsePrefix("fd00:1ab::/64")

// progress prints one progress line with the time since start.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *progress) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%5.2fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Up builds the lab and returns once its ping matrix is green (or the
// timeout passes), leaving it running. Every object is recorded in the
// state file before it is made.
func Up(ctx context.Context, o Options) (err error) {
	n, err := o.check()
	if err != nil {
		return err
	}
	if err := o.checkUp(); err != nil {
		return err
	}
	lock, err := lockFile(o.StateDir, 0)
	if err != nil {
		return fmt.Errorf("%w: %w (is `weft lab up` or `down` running?)", ErrRunning, err)
	}
	defer lock.Close()
	if st, err := LoadState(o.StateDir); err == nil {
		what := "is running"
		if !st.Ready {
			what = "was left half made (its `up` did not finish)"
		}
		return fmt.Errorf("%w: lab %q in %s %s since %s; run `weft lab down` first", ErrRunning, st.Prefix, o.StateDir, what, st.Created.Format(time.TimeOnly))
	} else if !errors.Is(err, ErrNoLab) {
		return fmt.Errorf("%w: %w; run `weft lab down` first", ErrRunning, err)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	p := &progress{w: o.Out, start: time.Now()}
	u := &upper{o: o, n: n, p: p}
	if err := u.run(ctx); err != nil {
		return fmt.Errorf("%w\nthe lab is half made: `weft lab status` shows it, the logs are in %s, `weft lab down` removes it", err, o.StateDir)
	}
	return nil
}

// upper carries Up's working state.
type upper struct {
	o   Options
	n   Names
	p   *progress
	rec *recorder
	ip  string // path of the ip command

	mu     sync.Mutex
	exited map[string]<-chan struct{} // by Proc.Name, closed on exit
}

// setExited remembers the exit channel of the named process.
func (u *upper) setExited(name string, ch <-chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.exited == nil {
		u.exited = map[string]<-chan struct{}{}
	}
	u.exited[name] = ch
}

// exitedCh returns the exit channel of the named process.
func (u *upper) exitedCh(name string) <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.exited[name]
}

func (u *upper) run(ctx context.Context) error {
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("the lab needs iproute2's ip command: %w", err)
	}
	u.ip = ipPath
	used, err := usedPrefixes()
	if err != nil {
		return err
	}
	start := 0
	if u.n.Prefix != DefaultPrefix {
		h := fnv.New32a()
		h.Write([]byte(u.n.Prefix))
		start = int(h.Sum32() % 512)
	}
	underlay, err := pickUnderlay(used, start)
	if err != nil {
		return err
	}
	want := 0
	if u.n.Prefix == DefaultPrefix {
		want = defaultEtcdPort
	}
	etcdPort, err := freePort(want)
	if err != nil {
		return err
	}
	peerPort, err := freePort(0)
	if err != nil {
		return err
	}
	st := &State{
		Version: stateVersion, Prefix: u.n.Prefix, StateDir: u.o.StateDir, Created: time.Now(),
		Backend: u.o.Backend, NFTables: u.o.NFTables, Network: u.o.Network, BinDir: u.o.BinDir,
		IPv6Network: u.o.IPv6Network, NoIPv4: u.o.NoIPv4,
		Underlay: underlay, BridgeAddr: nthAddr(underlay, 1),
		EtcdPort: etcdPort, EtcdPeer: peerPort, HealthzPort: healthzPort,
	}
	for i := 1; i <= u.o.Hosts; i++ {
		dir := filepath.Join(u.o.StateDir, u.n.Host(i))
		h := Host{
			Name: u.n.Host(i), NS: u.n.HostNS(i), Veth: u.n.HostVeth(i), Addr: nthAddr(underlay, 1+i),
			SubnetFile: filepath.Join(dir, "subnet.env"), DataDir: dir,
		}
		if u.o.IPv6Network.IsValid() {
			h.Addr6 = nthAddr(ipv6Underlay, 1+i)
		}
		for j := 1; j <= u.o.Pods; j++ {
			h.Pods = append(h.Pods, Pod{Name: u.n.Pod(i, j), NS: u.n.PodNS(i, j)})
		}
		st.Hosts = append(st.Hosts, h)
	}
	u.rec = &recorder{st: st}
	if err := u.rec.update(func(*State) {}); err != nil {
		return err
	}

	if err := sizeNeigh(u.o.Hosts, u.o.Pods, u.p.say, func(old, set NeighThresh) error {
		return u.rec.update(func(s *State) { s.NeighSaved, s.NeighSet = &old, &set })
	}); err != nil {
		return err
	}
	u.p.say("creating the underlay bridge %s (%s) in the root namespace", u.n.Bridge(), underlay)
	if err := u.bridge(ctx, st); err != nil {
		return err
	}
	u.p.say("starting etcd on %s:%d and 127.0.0.1:%d", st.BridgeAddr, etcdPort, etcdPort)
	etcdPID, err := u.startEtcd(st)
	if err != nil {
		return err
	}

	// Hosts, pod namespaces and the FORWARD rule while etcd starts.
	u.p.say("creating %d hosts and %d pod namespaces", u.o.Hosts, u.o.Hosts*u.o.Pods)
	ruleErr := make(chan error, 1)
	go func() { ruleErr <- u.forwardRule() }()
	err = u.parallelHosts(ctx, st.Hosts, u.makeHost)
	if err := errors.Join(err, <-ruleErr); err != nil {
		return err
	}

	c, err := etcdClient(etcdPort)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := waitEtcd(ctx, c, etcdPID, u.exitedCh("etcd"), filepath.Join(u.o.StateDir, "etcd.log")); err != nil {
		return err
	}
	if u.o.Kube {
		if err := u.startKube(ctx, st); err != nil {
			return err
		}
	} else {
		cfg := networkConfig(u.o.Network, u.o.IPv6Network, u.o.NoIPv4, u.o.Backend, u.o.NFTables)
		if _, err := c.Put(ctx, EtcdPrefix+"/config", cfg); err != nil {
			return fmt.Errorf("writing the network config to the lab's etcd: %w", err)
		}
		u.p.say("etcd ready; network config %s", cfg)
	}

	if err := u.parallelHosts(ctx, st.Hosts, func(_ context.Context, h Host) error { return u.startWeftd(h, st) }); err != nil {
		return err
	}
	u.p.say("started weftd on %d hosts; waiting for their /readyz, then attaching each host's pods through the flannel CNI plugin", len(st.Hosts))
	if err := u.parallelHosts(ctx, st.Hosts, func(ctx context.Context, h Host) error {
		if err := u.waitWeftd(ctx, h); err != nil {
			return err
		}
		return u.attachPods(ctx, h)
	}); err != nil {
		return err
	}

	snap := u.rec.snapshot()
	u.p.say("pinging every pod from every other pod")
	ms := matrices(ctx, &snap, pingFromNS, time.Now().Add(10*time.Second))
	if err := u.rec.update(func(s *State) { s.Ready = true }); err != nil {
		return err
	}
	fmt.Fprintln(u.o.Out)
	if err := RenderHosts(u.o.Out, hostRows(&snap)); err != nil {
		return err
	}
	fmt.Fprintln(u.o.Out)
	failures, pings, pods := 0, 0, 0
	for _, m := range ms {
		if err := renderFamilyMatrix(u.o.Out, m, len(ms) > 1); err != nil {
			return err
		}
		fmt.Fprintln(u.o.Out)
		failures += m.Failures()
		pings += len(m.Pods) * (len(m.Pods) - 1)
		pods = len(m.Pods)
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d pings unanswered after %s", failures, pings, time.Since(u.p.start).Round(time.Millisecond))
	}
	fmt.Fprintf(u.o.Out, "lab ready in %s: %d hosts, %d pods, every ping answered\n\n", time.Since(u.p.start).Round(time.Millisecond), len(snap.Hosts), pods)
	return RenderHints(u.o.Out, &snap)
}

// parallelHosts runs fn for every host at once and joins the errors.
func (u *upper) parallelHosts(ctx context.Context, hosts []Host, fn func(context.Context, Host) error) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { errs[i] = fn(ctx, h) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bridge creates the underlay bridge with the lab's first address.
func (u *upper) bridge(ctx context.Context, st *State) error {
	br := u.n.Bridge()
	if err := u.rec.addLink(br); err != nil {
		return err
	}
	addr := netip.PrefixFrom(st.BridgeAddr, st.Underlay.Bits()).String()
	for _, args := range [][]string{
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", addr, "dev", br},
		{"link", "set", br, "up"},
	} {
		if _, err := run(ctx, u.ip, args...); err != nil {
			return err
		}
	}
	return nil
}

// forwardRule adds the FORWARD rule for the bridge when bridged traffic
// passes iptables.
func (u *upper) forwardRule() error {
	if !bridgeNetfilter() {
		return nil
	}
	r := forwardRule(u.n)
	if err := u.rec.update(func(s *State) { s.Rules = append(s.Rules, r) }); err != nil {
		return err
	}
	return insertRule(r)
}

// startEtcd starts the detached etcd process and records its PID.
func (u *upper) startEtcd(st *State) (int, error) {
	port := strconv.Itoa(st.EtcdPort)
	argv := []string{u.o.Self, "lab", "etcd", "--state-dir", u.o.StateDir,
		"--client-urls", "http://" + st.BridgeAddr.String() + ":" + port + ",http://127.0.0.1:" + port,
		"--peer-url", "http://127.0.0.1:" + strconv.Itoa(st.EtcdPeer)}
	logPath := filepath.Join(u.o.StateDir, "etcd.log")
	pid, exited, err := startDetached(argv, logPath, os.Environ())
	if err != nil {
		return 0, err
	}
	u.setExited("etcd", exited)
	return pid, u.rec.update(func(s *State) {
		s.Procs = append(s.Procs, Proc{Name: "etcd", PID: pid, Exe: u.o.Self, Log: logPath})
	})
}

// makeHost creates host h's namespace joined to the bridge, and its pods'
// namespaces.
func (u *upper) makeHost(ctx context.Context, h Host) error {
	if err := u.rec.addNS(h.NS); err != nil {
		return err
	}
	if err := u.rec.addLink(h.Veth); err != nil {
		return err
	}
	addr := netip.PrefixFrom(h.Addr, 24).String()
	cmds := [][]string{
		{"netns", "add", h.NS},
		{"link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"link", "set", h.Veth, "master", u.n.Bridge(), "up"},
		{"-n", h.NS, "addr", "add", addr, "dev", "eth0"},
	}
	if h.Addr6.IsValid() {
		// No duplicate address detection in the lab's namespaces: an IPv6
		// address (the host's, cni0's, a pod's) is usable when added.
		cmds = append(cmds, noDAD(h.NS),
			[]string{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr6, ipv6Underlay.Bits()).String(), "dev", "eth0", "nodad"})
	}
	cmds = append(cmds,
		[]string{"-n", h.NS, "link", "set", "eth0", "up"},
		[]string{"-n", h.NS, "link", "set", "lo", "up"})
	for _, args := range cmds {
		if _, err := run(ctx, u.ip, args...); err != nil {
			return fmt.Errorf("creating host %s: %w", h.Name, err)
		}
	}
	for _, p := range h.Pods {
		if err := u.rec.addNS(p.NS); err != nil {
			return err
		}
		if _, err := run(ctx, u.ip, "netns", "add", p.NS); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
		if _, err := run(ctx, u.ip, "-n", p.NS, "link", "set", "lo", "up"); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
		if h.Addr6.IsValid() {
			if _, err := run(ctx, u.ip, noDAD(p.NS)...); err != nil {
				return fmt.Errorf("creating pod %s: %w", p.Name, err)
			}
		}
	}
	return nil
}

// noDAD returns the ip arguments that turn duplicate address detection off
// in namespace ns (for links made after it too).
func noDAD(ns string) []string {
	return []string{"netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"}
}

// weftdArgs returns the command line that runs weftd inside host h.
func weftdArgs(ip, binDir string, h Host, st *State) []string {
	args := append([]string{ip, "netns", "exec", h.NS, filepath.Join(binDir, "weftd")}, nodeArgs(h, st)...)
	return append(args, "-log-level", "info")
}

// nodeArgs returns the flags, shared by weftd and weft doctor, that say
// where host h's overlay is.
func nodeArgs(h Host, st *State) []string {
	store := []string{
		"-etcd-endpoints", "http://" + st.BridgeAddr.String() + ":" + strconv.Itoa(st.EtcdPort),
		"-etcd-prefix", EtcdPrefix,
	}
	if st.Kube != nil {
		store = []string{"-kube-subnet-mgr", "-kubeconfig-file", st.Kube.Kubeconfig, "-net-config-path", st.Kube.NetConf}
	}
	args := append(store,
		"-iface", "eth0",
		"-public-ip", h.Addr.String(),
		"-subnet-file", h.SubnetFile,
		"-ip-masq",
		"-healthz-ip", h.Addr.String(),
		"-healthz-port", strconv.Itoa(st.HealthzPort),
	)
	if h.Addr6.IsValid() {
		args = append(args, "-public-ipv6", h.Addr6.String())
	}
	return args
}

// weftdEnv returns host h's weftd environment: the lab's own, plus the
// per-host paths of the wireguard backend (the hosts share /run, so each
// needs its own key file and UAPI socket directory, or all would share one
// key).
func weftdEnv(environ []string, h Host) []string {
	return append(environ,
		"WIREGUARD_KEY_FILE="+filepath.Join(h.DataDir, "wgkey"),
		"WEFT_WIREGUARD_SOCKET_DIR="+filepath.Join(h.DataDir, "wireguard"))
}

// startWeftd starts host h's agent and records its PID.
func (u *upper) startWeftd(h Host, st *State) error {
	logPath := filepath.Join(h.DataDir, "weftd.log")
	// NODE_NAME: the host's Node in Kubernetes mode (ignored otherwise).
	pid, exited, err := startDetached(weftdArgs(u.ip, u.o.BinDir, h, st), logPath, DoctorEnv(os.Environ(), h))
	if err != nil {
		return fmt.Errorf("starting weftd on %s: %w", h.Name, err)
	}
	u.setExited(h.Name, exited)
	return u.rec.update(func(s *State) {
		s.Procs = append(s.Procs, Proc{Name: h.Name, PID: pid, Exe: filepath.Join(u.o.BinDir, "weftd"), Log: logPath})
	})
}

// waitWeftd polls host h's /readyz until it answers 200.
func (u *upper) waitWeftd(ctx context.Context, h Host) error {
	url := "http://" + h.Addr.String() + ":" + strconv.Itoa(healthzPort) + "/readyz"
	client := &http.Client{Timeout: 500 * time.Millisecond}
	pid := 0
	for _, p := range u.rec.snapshot().Procs {
		if p.Name == h.Name {
			pid = p.PID
		}
	}
	logPath := filepath.Join(h.DataDir, "weftd.log")
	exited := u.exitedCh(h.Name)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				env, err := subnetenv.Read(h.SubnetFile)
				if err == nil {
					u.p.say("weftd on %s ready: subnet %s", h.Name, envSubnets(env))
					return nil
				}
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("weftd on %s (pid %d) exited; the end of %s:\n%s", h.Name, pid, logPath, tail(logPath, 10))
		case <-ctx.Done():
			return fmt.Errorf("waiting for weftd on %s (%s): %w; see %s", h.Name, url, ctx.Err(), logPath)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// attachPods attaches host h's pods, all at once (the reference plugins
// tolerate it: the bridge plugin accepts an existing bridge and host-local
// locks its store), recording each before its CNI ADD.
func (u *upper) attachPods(ctx context.Context, h Host) error {
	hc, err := newHostCNI(h, u.o.BinDir)
	if err != nil {
		return err
	}
	if b, err := conflist(h, runtimePluginDir); err == nil && os.MkdirAll(filepath.Join(h.DataDir, "net.d"), 0o755) == nil {
		_ = os.WriteFile(filepath.Join(h.DataDir, "net.d", RuntimeConfList), b, 0o644)
	}
	errs := make([]error, len(h.Pods))
	var wg sync.WaitGroup
	for j, p := range h.Pods {
		wg.Go(func() {
			if errs[j] = u.setPod(h.Name, j, func(p *Pod) { p.Attached = true }); errs[j] != nil {
				return
			}
			t0 := time.Now()
			addr, addr6, err := hc.add(ctx, p)
			if err != nil {
				errs[j] = err
				return
			}
			var shown []string
			for _, a := range []netip.Prefix{addr, addr6} {
				if a.IsValid() {
					shown = append(shown, a.Addr().String())
				}
			}
			u.p.say("pod %s attached: %s (%s)", p.Name, strings.Join(shown, " "), time.Since(t0).Round(time.Millisecond))
			errs[j] = u.setPod(h.Name, j, func(p *Pod) { p.Addr, p.Addr6 = addr, addr6 })
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setPod updates pod j of the named host in the state.
func (u *upper) setPod(host string, j int, fn func(*Pod)) error {
	return u.rec.update(func(s *State) {
		for i := range s.Hosts {
			if s.Hosts[i].Name == host {
				fn(&s.Hosts[i].Pods[j])
			}
		}
	})
}

// endpoints lists the pods of st that have an IPv4 address (an IPv6 one
// with six).
func endpoints(st *State, six bool) []Endpoint {
	var eps []Endpoint
	for _, h := range st.Hosts {
		for _, p := range h.Pods {
			a := p.Addr
			if six {
				a = p.Addr6
			}
			if a.IsValid() {
				eps = append(eps, Endpoint{Name: p.Name, NS: p.NS, Addr: a.Addr()})
			}
		}
	}
	return eps
}

// matrices pings every pod from every other pod in each family the lab
// has (see pingMatrix).
func matrices(ctx context.Context, st *State, ping pinger, deadline time.Time) []*Matrix {
	var ms []*Matrix
	for _, six := range []bool{false, true} {
		if eps := endpoints(st, six); len(eps) > 0 {
			ms = append(ms, pingMatrix(ctx, eps, ping, deadline))
		}
	}
	return ms
}

// renderFamilyMatrix renders m, under a title naming its family when the
// lab has two.
func renderFamilyMatrix(w io.Writer, m *Matrix, titled bool) error {
	if titled && len(m.Pods) > 0 {
		fam := "IPv4"
		if m.Pods[0].Addr.Is6() {
			fam = "IPv6"
		}
		fmt.Fprintf(w, "%s:\n", fam)
	}
	return RenderMatrix(w, m)
}

// envSubnets names the subnets of a subnet.env.
func envSubnets(env *subnetenv.Env) string {
	var s []string
	for _, p := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if p.IsValid() {
			s = append(s, p.Masked().String())
		}
	}
	return strings.Join(s, " ")
}

// subnetsFromEnv reads each host's leased subnets from its subnet.env.
func subnetsFromEnv(st *State) map[string]string {
	m := map[string]string{}
	for _, h := range st.Hosts {
		if env, err := subnetenv.Read(h.SubnetFile); err == nil {
			m[h.Name] = envSubnets(env)
		}
	}
	return m
}

// tail returns the last n lines of the file at path, indented, for error
// messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
