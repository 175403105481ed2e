package cniplugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/test/cnitest"
	"github.com/weftnet/weft/test/netnstest"
)

// binDir holds the real plugin binaries, built once in TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "weft-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := cnitest.BuildPlugins(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// versions are the spec versions the plugin claims; every functional test
// runs against each.
var versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func atLeast(v, min string) bool { return slices.Index(versions, v) >= slices.Index(versions, min) }

var podSubnet = netip.MustParsePrefix("10.244.52.0/24")

func TestPodLifecycle(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
			list := h.StockConfList(t, v)
			a := h.AddPod(t, list)
			b := h.AddPod(t, list)

			for _, p := range []*cnitest.Pod{a, b} {
				if !podSubnet.Contains(p.Addr.Addr()) || p.Addr.Bits() != 24 {
					t.Errorf("pod address %s, want one in %s", p.Addr, podSubnet)
				}
				out := mustPod(t, p, "ip", "route", "show", "default")
				if !strings.HasPrefix(out, "default via 10.244.52.1 dev eth0") {
					t.Errorf("pod default route %q, want via 10.244.52.1 dev eth0", out)
				}
				out = mustPod(t, p, "ip", "-o", "link", "show", "eth0")
				if !strings.Contains(out, " mtu 1450 ") {
					t.Errorf("pod eth0 %q, want mtu 1450 (FLANNEL_MTU)", out)
				}
				assertCache(t, h, p)
			}
			if a.Addr == b.Addr {
				t.Fatalf("both pods got %s", a.Addr)
			}
			if _, err := a.Exec("ping", "-n", "-c1", "-W2", b.Addr.Addr().String()); err != nil {
				t.Errorf("pod %s cannot ping pod %s: %v", a.Addr, b.Addr, err)
			}
			if out := h.NS.MustExec(t, "ip", "-o", "addr", "show", "cni0"); !strings.Contains(out, "10.244.52.1/24") {
				t.Errorf("cni0 in the host namespace: %q, want 10.244.52.1/24", out)
			}

			if atLeast(v, "0.4.0") {
				if err := h.Check(list, a); err != nil {
					t.Errorf("CHECK: %v", err)
				}
				// CHECK is real: it notices the pod's interface is gone.
				mustPod(t, b, "ip", "link", "del", "eth0")
				if err := h.Check(list, b); err == nil {
					t.Errorf("CHECK succeeded after the pod's eth0 was deleted")
				}
			}
			if atLeast(v, "1.1.0") {
				if err := h.Do(func() error { return h.CNI.GetStatusNetworkList(context.Background(), list) }); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}

			for i := range 2 { // DEL twice: both succeed
				if err := h.Del(list, a); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if err := h.Del(list, b); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if ips := h.AllocatedIPs(t, "cbr0"); len(ips) != 0 {
				t.Errorf("addresses left after DEL: %v", ips)
			}
			if files := h.CacheFiles(t); len(files) != 0 {
				t.Errorf("cache files left after DEL: %v", files)
			}
		})
	}
}

func mustPod(t *testing.T, p *cnitest.Pod, args ...string) string {
	t.Helper()
	out, err := p.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// assertCache checks the pod's cache file: mode 0600, the delegate config
// with the attachment recorded.
func assertCache(t *testing.T, h *cnitest.Host, p *cnitest.Pod) {
	t.Helper()
	path := filepath.Join(h.DataDir, p.ContainerID)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("cache file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	var c struct {
		Type       string `json:"type"`
		Attachment struct {
			ContainerID string `json:"containerID"`
			IfName      string `json:"ifname"`
		} `json:"cni.weft.dev/attachment"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("cache file %s: %v", data, err)
	}
	if c.Type != "bridge" || c.Attachment.ContainerID != p.ContainerID || c.Attachment.IfName != p.IfName {
		t.Errorf("cache file %s does not hold the bridge config and attachment %s/%s", data, p.ContainerID, p.IfName)
	}
}

// TestAddDelCycles runs 200 ADD/DEL cycles, four pods at a time (so that
// the test stays short on a busy machine and the plugins also meet
// concurrent callers), then checks that nothing is left. It uses flannel
// without portmap, which holds none of what is checked here and would
// add two process runs per verb (the stock list is covered above).
func TestAddDelCycles(t *testing.T) {
	const cycles, workers = 200, 4
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.FlannelConfList(t, "1.0.0")
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		pod := h.NewPod(t)
		wg.Go(func() {
			for i := range cycles / workers {
				pod.ContainerID = fmt.Sprintf("cycle-%d-%d-%s", w, i, netnstest.Suffix(6))
				if err := h.Add(list, pod); err != nil {
					t.Errorf("worker %d cycle %d ADD: %v", w, i, err)
					return
				}
				if err := h.Del(list, pod); err != nil {
					t.Errorf("worker %d cycle %d DEL: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d ADD/DEL cycles (%d at a time) in %v", cycles, workers, time.Since(start).Round(time.Millisecond))
	assertClean(t, h)
}

// assertClean checks that nothing is left: no address in host-local's
// store, no veth on the host, no cache file.
func assertClean(t *testing.T, h *cnitest.Host) {
	t.Helper()
	if ips := h.AllocatedIPs(t, "cbr0"); len(ips) != 0 {
		t.Errorf("addresses left in host-local's store: %v", ips)
	}
	// A deleted network namespace is destroyed by the kernel
	// asynchronously (cleanup_net), taking the host end of its veth with
	// it: on a loaded machine that can lag, so wait for it.
	deadline := time.Now().Add(10 * time.Second)
	veths := h.Veths(t)
	for len(veths) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		veths = h.Veths(t)
	}
	if len(veths) != 0 {
		t.Errorf("veths left on the host: %v", veths)
	}
	if files := h.CacheFiles(t); len(files) != 0 {
		t.Errorf("cache files left: %v", files)
	}
}

// waitVeths waits up to 5 s for the host to have n veths and returns the
// ones it has.
func waitVeths(t *testing.T, h *cnitest.Host, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		veths := h.Veths(t)
		if len(veths) == n || time.Now().After(deadline) {
			return veths
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentAdds(t *testing.T) {
	const n = 20
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.0.0")
	pods := make([]*cnitest.Pod, n)
	for i := range pods {
		pods[i] = h.NewPod(t)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() { errs[i] = h.Add(list, p) })
	}
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Errorf("ADD %d: %v", i, errs[i])
			continue
		}
		if other, dup := seen[p.Addr]; dup {
			t.Errorf("%s and %s both got %s", other, p.ContainerID, p.Addr)
		}
		seen[p.Addr] = p.ContainerID
	}
	if len(seen) != n {
		t.Errorf("%d distinct addresses, want %d", len(seen), n)
	}
	for _, p := range pods {
		wg.Go(func() {
			if err := h.Del(list, p); err != nil {
				t.Errorf("DEL %s: %v", p.ContainerID, err)
			}
		})
	}
	wg.Wait()
	assertClean(t, h)
}

func TestDelAfterNetnsGone(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
			list := h.StockConfList(t, v)
			p := h.NewPod(t)
			if err := h.Add(list, p); err != nil {
				t.Fatal(err)
			}
			if err := p.DeleteNS(); err != nil {
				t.Fatal(err)
			}
			if err := h.Del(list, p); err != nil {
				t.Fatalf("DEL after the netns was deleted: %v", err)
			}
			assertClean(t, h)
		})
	}
}

func TestDelWithoutCacheReleasesIP(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.0.0")
	for _, damage := range []string{"missing", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			p := h.NewPod(t)
			if err := h.Add(list, p); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(h.DataDir, p.ContainerID)
			if damage == "missing" {
				os.Remove(path)
			} else {
				os.WriteFile(path, []byte(`{"cniVersion":"1.0.0","na`), 0o600)
			}
			if err := h.Del(list, p); err != nil {
				t.Fatalf("DEL with the cache %s: %v", damage, err)
			}
			assertClean(t, h)
		})
	}
}

func TestFailedAddCleansUp(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	tests := []struct {
		name   string
		plugin map[string]any
	}{
		{"delegate not found", map[string]any{"delegate": map[string]any{"type": "no-such-plugin"}}},
		// host-local allocates, then the bridge cannot add the route.
		{"delegate fails after IPAM", map[string]any{"ipam": map[string]any{"dataDir": h.IPAMDir,
			"routes": []any{map[string]any{"dst": "192.0.2.0/24", "gw": "198.51.100.1"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := map[string]any{"type": "flannel", "subnetFile": h.SubnetFile, "dataDir": h.DataDir,
				"ipam": map[string]any{"dataDir": h.IPAMDir}}
			for k, v := range tt.plugin {
				conf[k] = v
			}
			list := parseList(t, "1.0.0", conf)
			p := h.NewPod(t)
			err := h.Add(list, p)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			t.Logf("ADD failed as wanted: %v", err)
			assertClean(t, h)
		})
	}
}

func parseList(t *testing.T, v string, plugin map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"name": "cbr0", "cniVersion": v, "plugins": []any{plugin}})
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestGC(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.1.0")
	pods := []*cnitest.Pod{h.NewPod(t), h.NewPod(t), h.NewPod(t)}
	for _, p := range pods {
		if err := h.Add(list, p); err != nil {
			t.Fatal(err)
		}
	}
	// The runtime lost the pods (and its own cache, so that libcni cannot
	// DEL them itself: only the plugin's GC can release them).
	for _, p := range pods[1:] {
		if err := p.DeleteNS(); err != nil {
			t.Fatal(err)
		}
	}
	fresh := cnitest.NewCNIConfig(binDir, t.TempDir())
	gc := func(valid ...*cnitest.Pod) error {
		args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
		for _, p := range valid {
			args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ContainerID, IfName: p.IfName})
		}
		return h.Do(func() error { return fresh.GCNetworkList(context.Background(), list, args) })
	}
	if err := gc(pods[0]); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if ips := h.AllocatedIPs(t, "cbr0"); !slices.Equal(ips, []string{pods[0].Addr.Addr().String()}) {
		t.Errorf("after GC keeping %s: addresses %v", pods[0].Addr.Addr(), ips)
	}
	if files := h.CacheFiles(t); !slices.Equal(files, []string{pods[0].ContainerID}) {
		t.Errorf("after GC keeping %s: cache %v", pods[0].ContainerID, files)
	}
	if err := pods[0].DeleteNS(); err != nil {
		t.Fatal(err)
	}
	if err := gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	assertClean(t, h)
}

// plugin runs the flannel binary directly, as a runtime would, and returns
// its stdout and the CNI error it printed (nil on success).
func plugin(t *testing.T, h *cnitest.Host, env []string, stdin []byte) (string, *types.Error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "flannel"))
	cmd.Env = append(os.Environ(), append([]string{"CNI_PATH=" + binDir}, env...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	var err error
	run := func() error { err = cmd.Run(); return nil }
	if h != nil {
		if nsErr := h.Do(run); nsErr != nil {
			t.Fatalf("running flannel in %s: %v", h.NS.Name, nsErr)
		}
	} else {
		run()
	}
	if err == nil {
		return out.String(), nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("running flannel: %v", err)
	}
	te := &types.Error{}
	if jerr := json.Unmarshal(out.Bytes(), te); jerr != nil {
		t.Fatalf("flannel failed without a CNI error on stdout: %v; stdout %q stderr %q", err, out.String(), errOut.String())
	}
	return out.String(), te
}

func TestGCDirect(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.1.0")
	p := h.NewPod(t)
	if err := h.Add(list, p); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteNS(); err != nil {
		t.Fatal(err)
	}
	// A second pod whose address leaked: its cache file is gone (a crash,
	// or flannel's own plugin, which leaks on DEL without a cache).
	leak := h.NewPod(t)
	if err := h.Add(list, leak); err != nil {
		t.Fatal(err)
	}
	if err := leak.DeleteNS(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(h.DataDir, leak.ContainerID))
	conf := pluginConf(h, "1.1.0", map[string]any{"cni.dev/valid-attachments": []any{}})
	if _, cerr := plugin(t, h, []string{"CNI_COMMAND=GC"}, conf); cerr != nil {
		t.Fatalf("GC: %v", cerr)
	}
	assertClean(t, h)

	// GC is a 1.1 verb: an older config is refused.
	if _, cerr := plugin(t, h, []string{"CNI_COMMAND=GC"}, pluginConf(h, "1.0.0", nil)); cerr == nil || cerr.Code != types.ErrIncompatibleCNIVersion {
		t.Errorf("GC with a 1.0.0 config: %v, want code 1", cerr)
	}
}

func TestStatus(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.1.0")
	status := func() error {
		return h.Do(func() error { return h.CNI.GetStatusNetworkList(context.Background(), list) })
	}
	direct := func() *types.Error {
		_, cerr := plugin(t, h, []string{"CNI_COMMAND=STATUS"}, pluginConf(h, "1.1.0", nil))
		return cerr
	}
	if err := status(); err != nil {
		t.Errorf("STATUS through libcni with subnet.env present: %v", err)
	}
	if cerr := direct(); cerr != nil {
		t.Errorf("STATUS with subnet.env present: %v", cerr)
	}
	if err := os.Remove(h.SubnetFile); err != nil {
		t.Fatal(err)
	}
	var te *types.Error
	if err := status(); !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, h.SubnetFile) {
		t.Errorf("STATUS through libcni without subnet.env: %v, want code 50 naming %s", err, h.SubnetFile)
	}
	cerr := direct()
	if cerr == nil || cerr.Code != types.ErrPluginNotAvailable || !strings.Contains(cerr.Msg, h.SubnetFile) || !strings.Contains(cerr.Msg, "has not written it yet") {
		t.Errorf("STATUS without subnet.env: %v, want code 50 naming %s", cerr, h.SubnetFile)
	}
}

// TestBadInput needs no root: every case fails before a delegate runs.
func TestBadInput(t *testing.T) {
	truncated := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MT"
	tests := []struct {
		name     string
		env      *string // subnet.env content; nil: missing
		conf     func(h *cnitest.Host, v string) []byte
		code     uint
		contains []string
	}{{
		name: "missing subnet.env", env: nil,
		code: types.ErrTryAgainLater, contains: []string{"subnet.env does not exist", "has not written it yet"},
	}, {
		name: "truncated subnet.env", env: &truncated,
		code: types.ErrInvalidNetworkConfig, contains: []string{"subnet.env", `"FLANNEL_MT" is not KEY=value`, "truncated or corrupt"},
	}, {
		name: "bad JSON on stdin",
		conf: func(h *cnitest.Host, v string) []byte { return []byte(`{"cniVersion":"` + v + `","name":"cbr0",`) },
		code: types.ErrDecodingFailure, contains: []string{"decoding the network config on stdin"},
	}, {
		name: "delegate with ipam",
		conf: func(h *cnitest.Host, v string) []byte {
			return pluginConf(h, v, map[string]any{"delegate": map[string]any{"ipam": map[string]any{"type": "host-local"}}})
		},
		code: types.ErrInvalidNetworkConfig, contains: []string{`"delegate" section must not have a "ipam" field`},
	}, {
		name: "unknown cniVersion",
		conf: func(h *cnitest.Host, v string) []byte { return pluginConf(h, "9.9.9", nil) },
		code: types.ErrIncompatibleCNIVersion, contains: []string{"CNI version 9.9.9 is not one the plugin speaks"},
	}}
	for _, v := range versions {
		for _, tt := range tests {
			t.Run(v+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				h := &cnitest.Host{SubnetFile: filepath.Join(dir, "subnet.env"), DataDir: filepath.Join(dir, "flannel"), IPAMDir: filepath.Join(dir, "ipam")}
				good := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
				content := &good
				if tt.env != nil || tt.conf == nil {
					content = tt.env
				}
				if content != nil {
					os.WriteFile(h.SubnetFile, []byte(*content), 0o644)
				}
				conf := pluginConf(h, v, nil)
				if tt.conf != nil {
					conf = tt.conf(h, v)
				}
				_, cerr := plugin(t, nil, []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_NETNS=/var/run/netns/none", "CNI_IFNAME=eth0"}, conf)
				if cerr == nil {
					t.Fatal("ADD succeeded")
				}
				if cerr.Code != tt.code {
					t.Errorf("code %d (%s), want %d", cerr.Code, cerr.Msg, tt.code)
				}
				full := cerr.Msg + " " + cerr.Details
				for _, s := range tt.contains {
					if !strings.Contains(full, s) {
						t.Errorf("message %q does not say %q", full, s)
					}
				}
				if _, err := os.Stat(filepath.Join(h.DataDir, "c1")); err == nil {
					t.Errorf("a failed ADD left its cache file")
				}
			})
		}
	}
}

func pluginConf(h *cnitest.Host, v string, extra map[string]any) []byte {
	c := map[string]any{"cniVersion": v, "name": "cbr0", "type": "flannel",
		"subnetFile": h.SubnetFile, "dataDir": h.DataDir, "ipam": map[string]any{"dataDir": h.IPAMDir}}
	for k, val := range extra {
		c[k] = val
	}
	b, _ := json.Marshal(c)
	return b
}

// TestDelWithNothingKnown: DEL of a container with no cache and no
// subnet.env (a node being torn down) succeeds.
func TestDelWithNothingKnown(t *testing.T) {
	dir := t.TempDir()
	h := &cnitest.Host{SubnetFile: filepath.Join(dir, "subnet.env"), DataDir: filepath.Join(dir, "flannel"), IPAMDir: filepath.Join(dir, "ipam")}
	for _, v := range versions {
		if _, cerr := plugin(t, nil, []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0"}, pluginConf(h, v, nil)); cerr != nil {
			t.Errorf("%s: DEL: %v", v, cerr)
		}
	}
}

// TestDelWithoutCacheOrEnvReleases: a pod is added, then both its cache
// file and subnet.env disappear (a node being torn down, a wiped /run);
// DEL still releases its address in the real host-local's store, removes
// its veth (while the netns lives) and succeeds, and a second DEL succeeds
// too. Another pod's address stays allocated.
func TestDelWithoutCacheOrEnvReleases(t *testing.T) {
	for _, netns := range []string{"netns alive", "netns gone"} {
		t.Run(netns, func(t *testing.T) {
			h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
			list := h.StockConfList(t, "1.0.0")
			keep := h.AddPod(t, list)
			p := h.NewPod(t)
			if err := h.Add(list, p); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(h.DataDir, p.ContainerID)); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(h.SubnetFile); err != nil {
				t.Fatal(err)
			}
			if netns == "netns gone" {
				if err := p.DeleteNS(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				if err := h.Del(list, p); err != nil {
					t.Fatalf("DEL %d without cache and subnet.env: %v", i+1, err)
				}
			}
			if ips := h.AllocatedIPs(t, "cbr0"); !slices.Equal(ips, []string{keep.Addr.Addr().String()}) {
				t.Errorf("host-local holds %v after the DEL, want only the other pod's %s", ips, keep.Addr.Addr())
			}
			if files := h.CacheFiles(t); !slices.Equal(files, []string{keep.ContainerID}) {
				t.Errorf("cache files %v, want only the other pod's", files)
			}
			if veths := waitVeths(t, h, 1); len(veths) != 1 {
				t.Errorf("veths on the host %v, want only the other pod's", veths)
			}
		})
	}
}

// TestGCKeepsOtherNetworks: two networks sharing a dataDir; GC of one
// leaves the other's attachments alone.
func TestGCKeepsOtherNetworks(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	list := h.StockConfList(t, "1.1.0")
	p := h.NewPod(t)
	if err := h.Add(list, p); err != nil {
		t.Fatal(err)
	}
	conf := pluginConf(h, "1.1.0", map[string]any{"name": "other", "cni.dev/valid-attachments": []any{}})
	if _, cerr := plugin(t, h, []string{"CNI_COMMAND=GC"}, conf); cerr != nil {
		t.Fatalf("GC of network other: %v", cerr)
	}
	if files := h.CacheFiles(t); !slices.Equal(files, []string{p.ContainerID}) {
		t.Errorf("GC of another network touched cbr0's cache: %v", files)
	}
	if ips := h.AllocatedIPs(t, "cbr0"); len(ips) != 1 {
		t.Errorf("GC of another network released cbr0's addresses: %v", ips)
	}
}

// TestDualStackLifecycle: on a dual-stack node a pod gets one address of
// each family from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET, CHECK passes, and
// GC releases both once the runtime no longer lists the pod; STATUS reads
// the same subnet.env.
func TestDualStackLifecycle(t *testing.T) {
	env := cnitest.DefaultEnv()
	env.IPv6Networks = []netip.Prefix{netip.MustParsePrefix("fd00:42::/56")}
	env.IPv6Subnet = netip.MustParsePrefix("fd00:42:0:34::1/64")
	h := cnitest.NewHost(t, binDir, env)
	list := h.StockConfList(t, "1.1.0")
	p := h.NewPod(t)
	if err := h.Add(list, p); err != nil {
		t.Fatal(err)
	}
	out, err := p.Exec("ip", "-o", "addr", "show", "dev", p.IfName, "scope", "global")
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("10.244.52.0/24"), netip.MustParsePrefix("fd00:42:0:34::/64")
	var got4, got6 bool
	for _, f := range strings.Fields(out) {
		if a, err := netip.ParsePrefix(f); err == nil {
			got4 = got4 || v4.Contains(a.Addr())
			got6 = got6 || v6.Contains(a.Addr())
		}
	}
	if !got4 || !got6 {
		t.Fatalf("pod addresses %q: want one in %s and one in %s", out, v4, v6)
	}
	if ips := h.AllocatedIPs(t, "cbr0"); len(ips) != 2 {
		t.Errorf("host-local holds %v, want one address per family", ips)
	}
	if err := h.Check(list, p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := h.Do(func() error { return h.CNI.GetStatusNetworkList(context.Background(), list) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := p.DeleteNS(); err != nil {
		t.Fatal(err)
	}
	fresh := cnitest.NewCNIConfig(binDir, t.TempDir())
	gc := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	if err := h.Do(func() error { return fresh.GCNetworkList(context.Background(), list, gc) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	assertClean(t, h)
}
