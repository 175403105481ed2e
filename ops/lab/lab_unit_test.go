package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"weft-lab", true},
		{"wt12345", true},
		{"a", true},
		{"abcdefghij", true},
		{"abcdefghijk", false},
		{"", false},
		{"Weft", false},
		{"1lab", false},
		{"we ft", false},
		{"we/ft", false},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			n, err := NewNames(tc.prefix)
			if (err == nil) != tc.ok {
				t.Fatalf("NewNames(%q) error = %v, want ok %v", tc.prefix, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			for _, l := range []string{n.Bridge(), n.HostVeth(maxHosts)} {
				if len(l) > 15 {
					t.Errorf("link name %q is longer than 15 characters", l)
				}
				if !n.IsLink(l) {
					t.Errorf("IsLink(%q) = false for a name the lab makes", l)
				}
			}
			for _, ns := range []string{n.HostNS(1), n.PodNS(3, 2), n.HostNS(maxHosts)} {
				if !n.IsNS(ns) {
					t.Errorf("IsNS(%q) = false for a name the lab makes", ns)
				}
			}
		})
	}
	n, _ := NewNames("weft-lab")
	if got := n.PodNS(2, 1); got != "weft-lab-host2-pod1" {
		t.Errorf("PodNS(2, 1) = %q", got)
	}
	for _, foreign := range []string{"weft-lab", "weft-lab-host", "weft-lab-hostx", "weft-lab-host1-x", "weft-labx-host1", "other-host1", "weft-lab-host1-pod1-x"} {
		if n.IsNS(foreign) {
			t.Errorf("IsNS(%q) = true for a name the lab does not make", foreign)
		}
	}
	for _, foreign := range []string{"weft-lab-br0", "weft-lab-h", "weft-lab-hx", "eth0", "weft-lab"} {
		if n.IsLink(foreign) {
			t.Errorf("IsLink(%q) = true for a name the lab does not make", foreign)
		}
	}
}

func TestPickUnderlay(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name  string
		used  []netip.Prefix
		start int
		want  string
	}{
		{"empty", nil, 0, "198.18.0.0/24"},
		{"first taken", []netip.Prefix{p("198.18.0.0/24")}, 0, "198.18.1.0/24"},
		{"host address", []netip.Prefix{p("198.18.0.7/32")}, 0, "198.18.1.0/24"},
		{"covering route", []netip.Prefix{p("198.18.0.0/23")}, 0, "198.18.2.0/24"},
		{"start", nil, 44, "198.18.44.0/24"},
		{"start wraps", nil, 300, "198.18.44.0/24"},
		{"wraps", []netip.Prefix{p("198.18.255.0/24")}, 255, "198.18.0.0/24"},
		{"unrelated", []netip.Prefix{p("10.0.0.0/8"), p("192.0.2.0/24")}, 0, "198.18.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickUnderlay(tc.used, tc.start)
			if err != nil || got.String() != tc.want {
				t.Errorf("pickUnderlay = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
	if _, err := pickUnderlay([]netip.Prefix{p("198.18.0.0/16")}, 0); err == nil {
		t.Error("pickUnderlay with the whole range taken: want an error")
	}
	// Never in the end-to-end tests' range, whatever the start.
	e2e := p("198.19.0.0/16")
	for start := range 1024 {
		if got, err := pickUnderlay(nil, start); err != nil || got.Overlaps(e2e) || got.Bits() != 24 {
			t.Fatalf("pickUnderlay(start %d) = %v, %v: want a /24 outside %s", start, got, err, e2e)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	want := &State{
		Version: stateVersion, Prefix: "wt1", StateDir: dir, Created: time.Unix(1700000000, 0).UTC(), Ready: true,
		Backend: "vxlan", NFTables: true, Network: netip.MustParsePrefix("10.244.0.0/16"), BinDir: "/bin",
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"), NoIPv4: true,
		Underlay: netip.MustParsePrefix("198.18.3.0/24"), BridgeAddr: netip.MustParseAddr("198.18.3.1"),
		EtcdPort: 1, EtcdPeer: 2, HealthzPort: 3,
		NeighSaved: &NeighThresh{128, 512, 1024}, NeighSet: &NeighThresh{2048, 4096, 8192},
		Rules: []Rule{forwardRule(Names{Prefix: "wt1"})},
		Procs: []Proc{{Name: "etcd", PID: 42, Exe: "/bin/weft", Log: dir + "/etcd.log"},
			{Name: "host1", PID: 43, Exe: "/bin/weftd", Log: dir + "/host1/weftd.log"}},
		Hosts: []Host{{Name: "host1", NS: "wt1-host1", Veth: "wt1-h1", Addr: netip.MustParseAddr("198.18.3.2"),
			Addr6:      netip.MustParseAddr("fd00:1ab::2"),
			SubnetFile: dir + "/host1/subnet.env", DataDir: dir + "/host1",
			Pods: []Pod{{Name: "host1-pod1", NS: "wt1-host1-pod1", Attached: true, Addr: netip.MustParsePrefix("10.244.7.2/24"),
				Addr6: netip.MustParsePrefix("fd00:10:244:7::2/64")}}}},
		Kube: &KubeState{BinDir: "/cache/kube", Dir: dir + "/kube", Port: 4, Kubeconfig: dir + "/kube/kubeconfig", NetConf: dir + "/kube/net-conf.json"},
	}
	rec := &recorder{st: want}
	if err := rec.addNS("wt1-host1"); err != nil {
		t.Fatal(err)
	}
	if err := rec.addNS("wt1-host1"); err != nil { // recorded once
		t.Fatal(err)
	}
	if err := rec.addLink("wt1-br"); err != nil {
		t.Fatal(err)
	}
	// Every field carries a value, so that a field the file loses fails
	// the comparison below.
	if zero := zeroFields(reflect.ValueOf(*want), "State"); len(zero) > 0 {
		t.Fatalf("the test state leaves fields zero: %v", zero)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		w, _ := json.MarshalIndent(want, "", "  ")
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Errorf("round trip:\nwrote %s\nread  %s\n(%+v)", w, g, got)
	}
	if len(got.Namespaces) != 1 || len(got.Links) != 1 {
		t.Errorf("namespaces %v, links %v: want one of each", got.Namespaces, got.Links)
	}
	if _, err := LoadState(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no lab") {
		t.Errorf("LoadState of an empty dir = %v, want ErrNoLab", err)
	}
}

// zeroFields names the fields of the struct v, recursively through
// structs and the first element of slices, that hold their zero value.
func zeroFields(v reflect.Value, path string) []string {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type().PkgPath() != "github.com/weftnet/weft/ops/lab" {
			if v.IsZero() {
				return []string{path}
			}
			return nil
		}
		var out []string
		for i := range v.NumField() {
			out = append(out, zeroFields(v.Field(i), path+"."+v.Type().Field(i).Name)...)
		}
		return out
	case reflect.Slice:
		if v.Len() == 0 {
			return []string{path}
		}
		return zeroFields(v.Index(0), path+"[0]")
	default:
		if v.IsZero() {
			return []string{path}
		}
		return nil
	}
}

func TestLockRefusesSecondHolder(t *testing.T) {
	dir := t.TempDir()
	f, err := lockFile(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockFile(dir, 0); err == nil {
		t.Fatal("second lock succeeded while the first is held")
	}
	f.Close()
	g, err := lockFile(dir, time.Second)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()
}

func TestPingMatrixRetries(t *testing.T) {
	pods := []Endpoint{
		{Name: "host1-pod1", NS: "a", Addr: netip.MustParseAddr("10.244.1.2")},
		{Name: "host2-pod1", NS: "b", Addr: netip.MustParseAddr("10.244.2.2")},
		{Name: "host3-pod1", NS: "c", Addr: netip.MustParseAddr("10.244.3.2")},
	}
	var calls atomic.Int32
	// Host 3 answers only from the second round on.
	flaky := func(_ context.Context, ns string, addr netip.Addr) bool {
		calls.Add(1)
		return addr != pods[2].Addr || calls.Load() > 6
	}
	m := pingMatrix(context.Background(), pods, flaky, time.Time{})
	if m.Green() || m.Failures() != 2 {
		t.Errorf("one round: green %v, %d failures; want 2 failures", m.Green(), m.Failures())
	}
	calls.Store(0)
	m = pingMatrix(context.Background(), pods, flaky, time.Now().Add(5*time.Second))
	if !m.Green() {
		t.Errorf("with retries: %d failures, want green", m.Failures())
	}
	if got := calls.Load(); got != 8 {
		t.Errorf("%d pings, want 6 then the 2 failed ones again", got)
	}
}

func TestRenderMatrix(t *testing.T) {
	m := &Matrix{
		Pods: []Endpoint{
			{Name: "host1-pod1", Addr: netip.MustParseAddr("10.244.1.2")},
			{Name: "host2-pod1", Addr: netip.MustParseAddr("10.244.2.2")},
		},
		OK: [][]bool{{true, false}, {true, true}},
	}
	var b bytes.Buffer
	if err := RenderMatrix(&b, m); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"from \\ to        h1p1  h2p1\n" +
		"h1p1 10.244.1.2  ·     FAIL\n" +
		"h2p1 10.244.2.2  ok    ·\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestRenderHosts(t *testing.T) {
	var b bytes.Buffer
	err := RenderHosts(&b, []HostRow{
		{Host: "host1", Underlay: "198.18.0.2", Subnet: "10.244.7.0/24", Weftd: "pid 10 running", Pods: []string{"h1p1 10.244.7.2", "h1p2 10.244.7.3"}},
		{Host: "host2", Underlay: "198.18.0.3", Subnet: "-", Weftd: "not started"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"HOST   UNDERLAY    SUBNET         WEFTD           PODS\n" +
		"host1  198.18.0.2  10.244.7.0/24  pid 10 running  h1p1 10.244.7.2, h1p2 10.244.7.3\n" +
		"host2  198.18.0.3  -              not started     -\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestParseLabRules(t *testing.T) {
	n := Names{Prefix: "wt1"}
	lines := []string{
		"-P FORWARD ACCEPT",
		`-A FORWARD -i wt1-br -o wt1-br -m comment --comment "weft-lab:wt1" -j ACCEPT`,
		`-A FORWARD -i wt2-br -o wt2-br -m comment --comment weft-lab:wt2 -j ACCEPT`,
		"-A FORWARD -j DOCKER-USER",
	}
	got := parseLabRules(lines, n)
	if len(got) != 1 || strings.Join(got[0].Spec, " ") != strings.Join(forwardRule(n).Spec, " ") {
		t.Errorf("parseLabRules = %+v, want only the lab's rule %v", got, forwardRule(n).Spec)
	}
}

func TestRemoveFilesLeavesOthers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	for _, f := range []string{"state.json", "lock", "etcd.log", "etcd/member/x", "host1/subnet.env", "host12/weftd.log"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeFiles(dir); err != nil {
		t.Fatalf("removeFiles: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
	// A dir with a foreign file keeps it.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "state.json"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644)
	if err := removeFiles(dir); err == nil {
		t.Error("removeFiles with a foreign file: want an error saying the dir stays")
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !os.IsNotExist(err) {
		t.Errorf("state.json left: %v", err)
	}
}

func TestNetworkConfig(t *testing.T) {
	v6 := netip.MustParsePrefix("fd00:10:244::/56")
	for _, tc := range []struct {
		backend string
		v6      netip.Prefix
		noIPv4  bool
		nft     bool
		want    string
	}{
		{"vxlan", netip.Prefix{}, false, false, `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`},
		{"host-gw", netip.Prefix{}, false, false, `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}`},
		{"wireguard", netip.Prefix{}, false, false, `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"wireguard"}}`},
		{"vxlan", netip.Prefix{}, false, true, `{"Network":"10.244.0.0/16","SubnetLen":24,"EnableNFTables":true,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`},
		{"vxlan", v6, false, false, `{"Network":"10.244.0.0/16","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":64,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`},
		{"host-gw", v6, true, false, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":64,"Backend":{"Type":"host-gw"}}`},
	} {
		got := networkConfig(netip.MustParsePrefix("10.244.0.0/16"), tc.v6, tc.noIPv4, tc.backend, tc.nft)
		if got != tc.want {
			t.Errorf("networkConfig(%s, %v) = %s, want %s", tc.backend, tc.nft, got, tc.want)
		}
		if cfg, _, err := subnet.ParseConfig([]byte(got)); err != nil || cfg.BackendType != tc.backend || cfg.EnableNFTables != tc.nft {
			t.Errorf("networkConfig(%s, %v) does not parse as such a config: %v", tc.backend, tc.nft, err)
		}
	}
}

// TestKubeNetConf: the lab's net-conf.json in Kubernetes mode is its
// network config without subnet lengths (podCIDRs give each node's
// subnets), and flanneld's kube-mode rules take it without a warning.
func TestKubeNetConf(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")
	for _, tc := range []struct {
		st   State
		want string
	}{
		{State{Network: v4, Backend: "vxlan"}, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`},
		{State{Network: v4, Backend: "wireguard", NFTables: true}, `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"wireguard"}}`},
		{State{Network: v4, IPv6Network: v6, Backend: "host-gw"}, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`},
	} {
		got := netConf(&tc.st)
		if got != tc.want {
			t.Errorf("netConf(%s, %s) = %s, want %s", tc.st.Backend, tc.st.IPv6Network, got, tc.want)
		}
		cfg, unknown, ignored, err := subnet.ParseKubeConfig([]byte(got))
		if err != nil || len(unknown)+len(ignored) > 0 || cfg.BackendType != tc.st.Backend || cfg.EnableIPv6 != tc.st.IPv6Network.IsValid() {
			t.Errorf("netConf %s under the kube-mode rules: %+v, unknown %v, ignored %v, %v", got, cfg, unknown, ignored, err)
		}
	}
}

// TestConflistsKeepRuntimesApart: the lab's own pods and a runtime using
// the conflist in net.d share the network name and host-local store (one
// FLANNEL_SUBNET, one bridge) but not the plugin's data directory, and
// neither declares CNI 1.1 (no GC).
func TestConflistsKeepRuntimesApart(t *testing.T) {
	h := Host{Name: "host1", SubnetFile: "/run/weft-lab/host1/subnet.env", DataDir: "/run/weft-lab/host1"}
	type plugin struct {
		Type    string         `json:"type"`
		DataDir string         `json:"dataDir"`
		IPAM    map[string]any `json:"ipam"`
	}
	type list struct {
		CNIVersion string   `json:"cniVersion"`
		Name       string   `json:"name"`
		Plugins    []plugin `json:"plugins"`
	}
	parse := func(dir string) list {
		b, err := conflist(h, dir)
		if err != nil {
			t.Fatal(err)
		}
		var l list
		if err := json.Unmarshal(b, &l); err != nil || len(l.Plugins) != 1 {
			t.Fatalf("conflist %s: %v", b, err)
		}
		return l
	}
	lab, rt := parse(labPluginDir), parse(runtimePluginDir)
	if lab.Plugins[0].DataDir == rt.Plugins[0].DataDir {
		t.Errorf("the lab's pods and a runtime share the plugin's dataDir %s", lab.Plugins[0].DataDir)
	}
	if lab.Name != rt.Name || lab.Plugins[0].IPAM["dataDir"] != rt.Plugins[0].IPAM["dataDir"] {
		t.Errorf("the lab's pods and a runtime use different networks or host-local stores (duplicate addresses on one bridge): %+v, %+v", lab, rt)
	}
	for _, l := range []list{lab, rt} {
		if l.CNIVersion != "1.0.0" {
			t.Errorf("cniVersion %s, want 1.0.0 (no GC across runtimes)", l.CNIVersion)
		}
	}
}

// TestWeftdEnvPerHost: each host of a lab gets its own WireGuard key file
// and UAPI socket directory (they share /run).
func TestWeftdEnvPerHost(t *testing.T) {
	base := []string{"PATH=/usr/bin"}
	a := weftdEnv(base, Host{DataDir: "/lab/h1"})
	b := weftdEnv(base, Host{DataDir: "/lab/h2"})
	want := []string{"PATH=/usr/bin", "WIREGUARD_KEY_FILE=/lab/h1/wgkey", "WEFT_WIREGUARD_SOCKET_DIR=/lab/h1/wireguard"}
	if !slices.Equal(a, want) {
		t.Errorf("weftdEnv = %q, want %q", a, want)
	}
	if slices.Equal(a, b) {
		t.Errorf("two hosts share one environment: %q", a)
	}
}

// TestKubeFamilies: `up --kube` takes a dual-stack lab and refuses an
// IPv6-only one with the reason and what to run instead.
func TestKubeFamilies(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")
	only6 := &Options{Hosts: 2, Backend: "vxlan", IPv6Network: v6, NoIPv4: true, Kube: true, KubeBinDir: t.TempDir()}
	if err := only6.checkUp(); err == nil || !strings.Contains(err.Error(), "--kube --dual-stack") {
		t.Errorf("--kube --ipv6: %v, want a refusal that names --kube --dual-stack", err)
	}
	dual := &Options{Hosts: 2, Backend: "vxlan", Network: v4, IPv6Network: v6, Kube: true, KubeBinDir: t.TempDir()}
	if err := dual.checkUp(); err == nil || !strings.Contains(err.Error(), "kube-apiserver") || strings.Contains(err.Error(), "IPv6") {
		t.Errorf("--kube --dual-stack with an empty bin dir: %v, want only the missing binaries named", err)
	}
}
