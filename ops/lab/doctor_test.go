package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/ops/doctor"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// report is `weft doctor --json` as a test reads it.
type report struct {
	Node     string          `json:"node"`
	Healthy  bool            `json:"healthy"`
	ExitCode int             `json:"exitCode"`
	Checks   []doctor.Result `json:"checks"`
}

func (r *report) get(t *testing.T, name string) doctor.Result {
	t.Helper()
	for _, c := range r.Checks {
		if c.Check == name {
			return c
		}
	}
	t.Fatalf("no check %q in the report", name)
	return doctor.Result{}
}

func (r *report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-8s %-30s %s %s\n", c.Status, c.Check, c.Verdict, strings.Join(c.Details, "; "))
	}
	return b.String()
}

// doctorLab is the one lab the doctor's fault tests share.
type doctorLab struct {
	*testLab
	st *lab.State
}

// doctor runs `weft lab doctor host --json` (plus extra) and returns the
// report and the exit code.
func (l *doctorLab) doctor(t *testing.T, host string, extra ...string) (*report, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := l.args("doctor", append([]string{host, "--json"}, extra...)...)
	cmd := exec.CommandContext(ctx, filepath.Join(l.bin, "weft"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("weft lab doctor: %v\n%s", err, stderr.String())
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("weft lab doctor %s --json: %v\n%s%s", host, err, out, stderr.String())
	}
	if r.ExitCode != code {
		t.Errorf("exit code %d, but the report says %d", code, r.ExitCode)
	}
	return &r, code
}

// expect runs the doctor on host and checks that it exits with code and
// that the named check has the status and mentions every want string in
// its verdict, details, cause or fix.
func (l *doctorLab) expect(t *testing.T, host string, extra []string, code int, check string, status doctor.Status, want ...string) *report {
	t.Helper()
	r, got := l.doctor(t, host, extra...)
	c := r.get(t, check)
	text := strings.Join(append(append([]string{c.Verdict, c.Cause}, c.Details...), c.Fix...), "\n")
	ok := got == code && c.Status == status
	for _, w := range want {
		ok = ok && strings.Contains(text, w)
	}
	if !ok {
		t.Errorf("doctor on %s: exit %d, %q %s:\n%s\nwant exit %d, %s, mentioning %q; the report:\n%s", host, got, check, c.Status, text, code, status, want, r)
	}
	return r
}

// waitHealthy polls the doctor until host is healthy again (the fault was
// undone and the agent has repaired what it owns).
func (l *doctorLab) waitHealthy(t *testing.T, host string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, code := l.doctor(t, host)
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not healthy again after the fault was undone (exit %d):\n%s", host, code, r)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (l *doctorLab) host(name string) lab.Host {
	for _, h := range l.st.Hosts {
		if h.Name == name {
			return h
		}
	}
	l.t.Fatalf("no host %s", name)
	return lab.Host{}
}

// inHost runs a command inside host's namespace.
func (l *doctorLab) inHost(t *testing.T, host string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.host(host).NS}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", host, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pauseAgent stops host's weftd (SIGSTOP) until the test ends, for faults
// the agent would otherwise repair before the doctor looks.
func (l *doctorLab) pauseAgent(t *testing.T, host string) {
	t.Helper()
	pid := 0
	for _, p := range l.st.Procs {
		if p.Name == host {
			pid = p.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no weftd recorded for %s", host)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping weftd of %s (pid %d): %v", host, pid, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
}

// resumeAgent lets host's weftd, stopped by pauseAgent, go on.
func (l *doctorLab) resumeAgent(t *testing.T, host string) {
	t.Helper()
	for _, p := range l.st.Procs {
		if p.Name == host {
			if err := syscall.Kill(p.PID, syscall.SIGCONT); err != nil {
				t.Fatalf("resuming weftd of %s (pid %d): %v", host, p.PID, err)
			}
			return
		}
	}
	t.Fatalf("no weftd recorded for %s", host)
}

// store opens the lab's lease store.
func (l *doctorLab) store(t *testing.T) (*etcdstore.Store, *subnet.Config) {
	t.Helper()
	s, err := etcdstore.New(etcdstore.Options{
		Endpoints: []string{"http://" + l.st.BridgeAddr.String() + ":" + strconv.Itoa(l.st.EtcdPort)},
		Prefix:    lab.EtcdPrefix, TTL: time.Minute, ValidatorFor: registry.ValidateData,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := s.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// leaseOf returns the lease advertising host's address.
func (l *doctorLab) leaseOf(t *testing.T, s *etcdstore.Store, cfg *subnet.Config, host string) subnet.Lease {
	t.Helper()
	ls, err := s.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ls.Entries {
		if e.Invalid == nil && e.Lease.Attrs.PublicIP == l.host(host).Addr {
			return e.Lease
		}
	}
	t.Fatalf("no lease for %s", host)
	return subnet.Lease{}
}

// TestLabDoctor starts one lab and proves each of the doctor's checks
// fires on its fault, with the right cause and exit code: each fault is
// injected into one host, checked, undone, and the host is healthy again
// before the next (so they share the lab).
func TestLabDoctor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestLabDoctor needs root (network namespaces, links, iptables); run it as root, as CI does")
	}
	tl := &testLab{
		t:        t,
		bin:      buildBins(t),
		prefix:   fmt.Sprintf("wd%d", os.Getpid()%100000),
		stateDir: filepath.Join(t.TempDir(), "lab"),
	}
	t.Cleanup(func() {
		if out, err := tl.run("down"); err != nil {
			t.Errorf("cleanup: weft lab down: %v\n%s", err, out)
		}
	})
	out := tl.mustRun("up", "--hosts", "3", "--pods", "1", "--bin-dir="+tl.bin)
	if !strings.Contains(out, "every ping answered") {
		t.Fatalf("up did not report a green matrix")
	}
	if !strings.Contains(out, "lab doctor host1") {
		t.Errorf("up's hints do not show weft lab doctor:\n%s", out)
	}
	st, err := lab.LoadState(tl.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l := &doctorLab{testLab: tl, st: st}

	t.Run("healthy", func(t *testing.T) {
		for _, h := range []string{"host1", "host2", "host3"} {
			r, code := l.doctor(t, h, "--peers")
			if code != 0 || !r.Healthy {
				t.Errorf("%s: exit %d:\n%s", h, code, r)
			}
			for _, c := range r.Checks {
				if c.Status == doctor.Problem || c.Status == doctor.Unknown {
					t.Errorf("%s: %s is %s: %s", h, c.Check, c.Status, c.Verdict)
				}
			}
			for _, c := range r.Checks {
				if !slices.Contains(doctor.CheckNames, c.Check) {
					t.Errorf("check %q is not in doctor.CheckNames (and so not checked against troubleshooting.md)", c.Check)
				}
			}
			if c := r.get(t, "peers reachable"); c.Status != doctor.OK || !strings.Contains(c.Verdict, "all 2 peers") {
				t.Errorf("%s: peers reachable: %s %s", h, c.Status, c.Verdict)
			}
		}
		// The text report of the whole lab.
		out, err := l.run("doctor")
		if err != nil || strings.Count(out, "healthy: 0 problems") != 3 || !strings.Contains(out, "== host3 ==") {
			t.Errorf("weft lab doctor: %v\n%s", err, out)
		}
	})

	t.Run("ip_forward off", func(t *testing.T) {
		l.inHost(t, "host1", "sysctl", "-qw", "net.ipv4.ip_forward=0")
		defer l.inHost(t, "host1", "sysctl", "-qw", "net.ipv4.ip_forward=1")
		l.expect(t, "host1", nil, 1, "sysctl ip_forward", doctor.Problem, "net.ipv4.ip_forward is 0", "sysctl -w net.ipv4.ip_forward=1")
	})
	l.waitHealthy(t, "host1")

	t.Run("strict rp_filter on the overlay device", func(t *testing.T) {
		l.inHost(t, "host1", "sysctl", "-qw", "net.ipv4.conf.flannel/1.rp_filter=1")
		defer l.inHost(t, "host1", "sysctl", "-qw", "net.ipv4.conf.flannel/1.rp_filter=0")
		l.expect(t, "host1", nil, 1, "sysctl rp_filter", doctor.Problem, "strict reverse-path filtering on flannel.1", "sysctl -w net.ipv4.conf.flannel/1.rp_filter=2")
	})
	l.waitHealthy(t, "host1")

	t.Run("FORWARD DROP without the accept rule", func(t *testing.T) {
		l.pauseAgent(t, "host1") // it would put its jump back within 5 s
		l.inHost(t, "host1", "iptables", "-P", "FORWARD", "DROP")
		defer l.inHost(t, "host1", "iptables", "-P", "FORWARD", "ACCEPT")
		l.inHost(t, "host1", "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD")
		r := l.expect(t, "host1", nil, 1, "firewall forward", doctor.Problem, "FORWARD policy DROP and nothing accepts the pod network 10.244.0.0/16")
		if c := r.get(t, "firewall chains"); c.Status != doctor.Problem || c.Verdict != "no jump from filter/FORWARD to FLANNEL-FWD" {
			t.Errorf("firewall chains: %s %s", c.Status, c.Verdict)
		}
		if c := r.get(t, "agent ready"); c.Status != doctor.Problem {
			t.Errorf("the paused agent is reported %s: %s", c.Status, c.Verdict)
		}
	})
	l.waitHealthy(t, "host1")

	t.Run("bridge-nf-call-iptables off", func(t *testing.T) {
		// Per network namespace in this kernel, as on a node.
		l.inHost(t, "host1", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
		defer l.inHost(t, "host1", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
		l.expect(t, "host1", nil, 0, "sysctl bridge-nf-call-iptables", doctor.Warn, "net.bridge.bridge-nf-call-iptables is 0", "sysctl -w net.bridge.bridge-nf-call-iptables=1")
	})

	t.Run("rules in both iptables variants", func(t *testing.T) {
		// The lab's agents write through iptables; a tool on the node that
		// writes through the other variant makes a second rule set the
		// kernel runs too.
		other, ours := "iptables-legacy", "iptables-nft"
		if v := l.inHost(t, "host1", "iptables", "-V"); strings.Contains(v, "legacy") {
			other, ours = ours, other
		}
		rule := []string{"FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"}
		l.inHost(t, "host1", append([]string{other, "-A"}, rule...)...)
		defer l.inHost(t, "host1", append([]string{other, "-D"}, rule...)...)
		want := "rules in both iptables-legacy (1 rules) and iptables-nft"
		if other == "iptables-nft" {
			want = "rules in both iptables-legacy"
		}
		r := l.expect(t, "host1", nil, 1, "firewall backends", doctor.Problem, want, "update-alternatives --set iptables")
		t.Logf("the agents write through %s; one rule added through %s", ours, other)
		if c := r.get(t, "firewall forward"); c.Status == doctor.Problem {
			t.Errorf("firewall forward with an extra legacy rule: %s %s", c.Status, c.Verdict)
		}
	})
	l.waitHealthy(t, "host1")

	t.Run("cni0 with a stale address", func(t *testing.T) {
		l.inHost(t, "host1", "ip", "addr", "add", "10.245.7.1/24", "dev", "cni0")
		defer l.inHost(t, "host1", "ip", "addr", "del", "10.245.7.1/24", "dev", "cni0")
		l.expect(t, "host1", nil, 1, "bridge address", doctor.Problem,
			"cni0 has 10.245.7.1/24, but FLANNEL_SUBNET is", "already has an IP address different from",
			"1 pod still attached", "ip addr del 10.245.7.1/24 dev cni0")
	})
	l.waitHealthy(t, "host1")

	t.Run("a peer's FDB entry deleted", func(t *testing.T) {
		s, cfg := l.store(t)
		peer := l.leaseOf(t, s, cfg, "host2")
		mac, err := vxlan.ParseBackendData(peer.Attrs.BackendData, 1)
		if err != nil {
			t.Fatal(err)
		}
		l.pauseAgent(t, "host1") // it would repair the entry at once
		l.inHost(t, "host1", "bridge", "fdb", "del", mac.String(), "dev", "flannel.1", "dst", peer.Attrs.PublicIP.String())
		l.expect(t, "host1", nil, 1, "routes, neighbours, fdb", doctor.Problem,
			"1 missing, 0 stale, 0 extra", "missing fdb "+mac.String()+": want dst "+peer.Attrs.PublicIP.String())
	})
	l.waitHealthy(t, "host1")

	t.Run("a peer lease duplicating another's VTEP MAC", func(t *testing.T) {
		s, cfg := l.store(t)
		host2 := l.leaseOf(t, s, cfg, "host2")
		mac, err := vxlan.ParseBackendData(host2.Attrs.BackendData, 1)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(vxlan.BackendData{VNI: 1, VtepMAC: mac.String()})
		clone := netip.MustParseAddr(l.st.Underlay.Addr().String()).Next()
		for range 200 {
			clone = clone.Next()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dup, err := s.AcquireLease(ctx, cfg, subnet.LeaseAttrs{PublicIP: clone, BackendType: "vxlan", BackendData: data}, subnet.AcquireOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.ReleaseLease(context.Background(), dup); err != nil {
				t.Errorf("releasing the duplicate lease: %v", err)
			}
		}()
		l.expect(t, "host1", nil, 1, "peer leases", doctor.Problem,
			"VTEP MAC "+mac.String()+" is shared by 2 leases", dup.Subnet.String(), host2.Subnet.String(), "weft leases release")
	})
	l.waitHealthy(t, "host1")

	t.Run("UDP 8472 dropped from one peer", func(t *testing.T) {
		s, cfg := l.store(t)
		host2, host3 := l.leaseOf(t, s, cfg, "host2"), l.leaseOf(t, s, cfg, "host3")
		rule := []string{"INPUT", "-s", l.host("host3").Addr.String(), "-p", "udp", "--dport", "8472", "-j", "DROP"}
		l.inHost(t, "host1", append([]string{"iptables", "-I"}, rule...)...)
		defer l.inHost(t, "host1", append([]string{"iptables", "-D"}, rule...)...)
		r := l.expect(t, "host1", []string{"--peers"}, 1, "peers reachable", doctor.Problem,
			"1 of 2 peers do not answer through the overlay", host3.Subnet.String(), "UDP 8472")
		if c := r.get(t, "peers reachable"); strings.Contains(strings.Join(c.Details, " "), host2.Subnet.String()) {
			t.Errorf("host2 is named unreachable too: %v", c.Details)
		}
		// Without --peers the doctor sends nothing and sees nothing wrong.
		if _, code := l.doctor(t, "host1"); code != 0 {
			t.Errorf("without --peers: exit %d, want 0", code)
		}
	})
	l.waitHealthy(t, "host1")

	t.Run("a leaked host-local reservation", func(t *testing.T) {
		h := l.host("host1")
		s, cfg := l.store(t)
		own := l.leaseOf(t, s, cfg, "host1")
		ip := own.Subnet.Addr()
		for range 200 {
			ip = ip.Next()
		}
		ns := l.prefix + "-leak"
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v\n%s", err, out)
		}
		defer exec.Command("ip", "netns", "delete", ns).Run()
		id := "leaked0123456789"
		resv := filepath.Join(h.DataDir, "ipam", "weft-lab", ip.String())
		cache := filepath.Join(h.DataDir, "cache", "results", "weft-lab-"+id+"-eth0")
		entry, _ := json.Marshal(map[string]any{"kind": "cniCacheV1", "containerId": id, "ifName": "eth0", "networkName": "weft-lab", "netns": "/var/run/netns/" + ns})
		if err := os.WriteFile(resv, []byte(id+"\r\neth0"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(resv)
		if err := os.WriteFile(cache, entry, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(cache)
		// While the container's namespace exists, the reservation is used.
		l.expect(t, "host1", nil, 0, "host-local reservations", doctor.OK, "2 reservations")
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns delete: %v\n%s", err, out)
		}
		l.expect(t, "host1", nil, 1, "host-local reservations", doctor.Problem,
			"1 of 2 host-local reservations", ip.String()+" (container leaked012345, eth0): its network namespace /var/run/netns/"+ns+" is gone",
			"rm "+resv, "rm "+cache)
	})
	l.waitHealthy(t, "host1")

	t.Run("could not look", func(t *testing.T) {
		h := l.host("host1")
		argv := lab.DoctorArgs(filepath.Join(l.bin, "weft"), h, l.st, "--json", "-etcd-endpoints", "http://127.0.0.1:1")
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("with etcd out of reach: %v, want exit 2\n%s", err, out)
		}
		var r report
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		if c := r.get(t, "store"); c.Status != doctor.Unknown || !strings.Contains(c.Verdict, "cannot read the network config") {
			t.Errorf("store: %s %s", c.Status, c.Verdict)
		}
	})
}
