// Package kubetest runs a real Kubernetes control plane for tests: an
// embedded etcd (test/etcdtest), a kube-apiserver and a
// kube-controller-manager that allocates podCIDRs (--allocate-node-cidrs),
// both started as processes from the binaries scripts/kube-bins.sh builds
// into its cache. The apiserver listens on one address (a test bridge's, or
// 127.0.0.1) with a static admin token and AlwaysAllow authorization, and
// the package writes a kubeconfig for the agents under test. Processes are
// killed by PID at cleanup. When the binaries cannot be found or built the
// test fails (it never skips): the message names the command to run.
package kubetest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/test/etcdtest"
)

// BinDirEnv names the environment variable holding the directory with
// kube-apiserver and kube-controller-manager (scripts/test.sh sets it).
const BinDirEnv = kubecp.BinDirEnv

// Token is the admin bearer token every Cluster accepts.
const Token = kubecp.Token

// startTimeout bounds how long the apiserver may take to become ready on
// a busy 2-core machine.
const startTimeout = 90 * time.Second

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns the directory holding kube-apiserver and
// kube-controller-manager: $WEFT_KUBE_BIN_DIR, or the directory
// scripts/kube-bins.sh prints (it builds the binaries on first use, which
// takes minutes, and reuses its cache later). It fails the test when
// neither works.
func BinDir(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binDir, binErr = findBinDir() })
	if binErr != nil {
		t.Fatalf("kubetest: %v", binErr)
	}
	return binDir
}

func findBinDir() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		if err := kubecp.CheckBinDir(d); err != nil {
			return "", fmt.Errorf("%s: %v; run `bash scripts/kube-bins.sh` and use the directory it prints", BinDirEnv, err)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	script, err := kubecp.FindScript(wd)
	if err != nil {
		return "", fmt.Errorf("%s is not set and %v; run `bash scripts/kube-bins.sh` in the weft checkout and export %s=<the directory it prints>", BinDirEnv, err, BinDirEnv)
	}
	d, err := kubecp.RunScript(script, os.Stderr)
	if err != nil {
		return "", fmt.Errorf("%v; then export %s=<the directory it prints>", err, BinDirEnv)
	}
	return d, nil
}

// Options configure Start.
type Options struct {
	// Addr is the address the apiserver binds and advertises; 127.0.0.1
	// when zero (then with --endpoint-reconciler-type=none).
	Addr netip.Addr
	// ClusterCIDR is the controller manager's --cluster-cidr
	// (10.244.0.0/16 when zero).
	ClusterCIDR netip.Prefix
	// NodeCIDRMaskSize is --node-cidr-mask-size (24 when zero).
	NodeCIDRMaskSize int
	// NoControllerManager starts no controller manager: nodes keep the
	// podCIDR they are created with (none unless set).
	NoControllerManager bool
	// ControllerQPS is the controller manager's --kube-api-qps (20 when zero).
	ControllerQPS int
}

// Cluster is a running control plane.
type Cluster struct {
	t     testing.TB
	opts  Options
	dir   string
	plane kubecp.Plane

	// Etcd is the apiserver's storage.
	Etcd *etcdtest.Server
	// URL is the apiserver's URL, e.g. "https://198.19.4.1:41234".
	URL string
	// Kubeconfig is the path of a kubeconfig with the admin token.
	Kubeconfig string
	// Client is an admin clientset with a high QPS limit.
	Client kubernetes.Interface

	mu        sync.Mutex
	apiserver *proc
	kcm       *proc
}

// Start runs etcd, the apiserver and (unless told not to) the controller
// manager, waits until the apiserver is ready, and stops everything at
// cleanup.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if !o.Addr.IsValid() {
		o.Addr = netip.MustParseAddr("127.0.0.1")
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if o.NodeCIDRMaskSize == 0 {
		o.NodeCIDRMaskSize = 24
	}
	if o.ControllerQPS == 0 {
		o.ControllerQPS = 20
	}
	c := &Cluster{t: t, opts: o, dir: t.TempDir()}
	c.Etcd = etcdtest.Start(t)
	c.plane = kubecp.Plane{
		Dir: c.dir, BinDir: BinDir(t), Addr: o.Addr, Port: freePort(t, o.Addr), EtcdURL: c.Etcd.ClientURL,
		ClusterCIDR: o.ClusterCIDR, MaskSize: o.NodeCIDRMaskSize, ControllerQPS: o.ControllerQPS,
	}
	c.URL = c.plane.URL()
	if err := c.plane.WriteFiles(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(c.stopAll)
	c.StartAPIServer()
	c.Kubeconfig = c.plane.Kubeconfig()
	if err := c.plane.WriteKubeconfig(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("kubetest: loading %s: %v", c.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	c.Client, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: client: %v", err)
	}
	if !o.NoControllerManager {
		c.startKCM()
	}
	return c
}

// RESTConfig returns a fresh admin client config.
func (c *Cluster) RESTConfig() *rest.Config {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		c.t.Fatalf("kubetest: loading %s: %v", c.Kubeconfig, err)
	}
	return cfg
}

func freePort(t testing.TB, a netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(a.String(), "0"))
	if err != nil {
		t.Fatalf("kubetest: no free port on %s: %v", a, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartAPIServer starts the apiserver (again, after StopAPIServer) on the
// same address, port, certificates and storage, and waits until it is ready.
func (c *Cluster) StartAPIServer() {
	c.t.Helper()
	p := startProc(c.t, c.plane.APIServer(), filepath.Join(c.dir, "kube-apiserver.log"), c.plane.APIServerArgs())
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	c.waitReady(p)
}

// StopAPIServer kills the apiserver and waits for it to exit.
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.mu.Unlock()
	p.kill()
}

func (c *Cluster) waitReady(p *proc) {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("kubetest: kube-apiserver exited during start (%v); last log lines:\n%s", p.state, p.tail(40))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.plane.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		last = err.Error()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("kubetest: kube-apiserver at %s not ready within %s (last: %s); last log lines:\n%s", c.URL, startTimeout, last, p.tail(40))
}

// StopControllerManager kills the controller manager: nodes created
// meanwhile get no podCIDR until StartControllerManager.
func (c *Cluster) StopControllerManager() {
	c.mu.Lock()
	p := c.kcm
	c.kcm = nil
	c.mu.Unlock()
	p.kill()
}

// StartControllerManager starts the controller manager (again).
func (c *Cluster) StartControllerManager() { c.startKCM() }

func (c *Cluster) startKCM() {
	p := startProc(c.t, c.plane.ControllerManager(), filepath.Join(c.dir, "kube-controller-manager.log"), c.plane.ControllerManagerArgs())
	c.mu.Lock()
	c.kcm = p
	c.mu.Unlock()
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := []*proc{c.kcm, c.apiserver}
	c.kcm, c.apiserver = nil, nil
	c.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if c.t.Failed() {
		for _, name := range []string{"kube-apiserver.log", "kube-controller-manager.log"} {
			c.t.Logf("=== %s (last lines):\n%s", name, tailFile(filepath.Join(c.dir, name), 30))
		}
	}
}

// LogPath returns the path of a component's log ("kube-apiserver" or
// "kube-controller-manager").
func (c *Cluster) LogPath(component string) string { return filepath.Join(c.dir, component+".log") }

// proc is a control-plane process this package started.
type proc struct {
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
	state *os.ProcessState
}

func startProc(t testing.TB, bin, logPath string, args []string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a ^C to the test does not reach it
	// before cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("kubetest: starting %s: %v", bin, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		logf.Close()
		close(p.done)
	}()
	return p
}

// kill sends SIGKILL to the process (by its PID) and waits for it.
func (p *proc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// NodeOptions describe a Node as a kubelet registers it.
type NodeOptions struct {
	// InternalIP is the node's InternalIP address (none when zero).
	InternalIP netip.Addr
	// PodCIDR is set in the spec at creation (as a test that does not wait
	// for the controller manager would); empty leaves it to the controller.
	PodCIDR string
	// Annotations are added to the kubelet's own.
	Annotations map[string]string
	// Images is the number of container images listed in the status
	// (kubelets report up to 50), to make the object kubelet-sized.
	Images int
}

// NewNode returns a Node object as a kubelet registers it: labels,
// annotations, addresses, capacity, conditions, node info and images.
func NewNode(name string, o NodeOptions) *corev1.Node {
	now := metav1.Now()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname":  name,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      "amd64",
				"beta.kubernetes.io/os":   "linux",
				"beta.kubernetes.io/arch": "amd64",
			},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: o.PodCIDR},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("2"),
				corev1.ResourceMemory:           resource.MustParse("8145396Ki"),
				corev1.ResourcePods:             resource.MustParse("110"),
				corev1.ResourceEphemeralStorage: resource.MustParse("102687672Ki"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("2"),
				corev1.ResourceMemory:           resource.MustParse("8042996Ki"),
				corev1.ResourcePods:             resource.MustParse("110"),
				corev1.ResourceEphemeralStorage: resource.MustParse("94636958809"),
			},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: "0123456789abcdef0123456789abcdef", SystemUUID: "01234567-89ab-cdef-0123-456789abcdef",
				BootID: "fedcba98-7654-3210-fedc-ba9876543210", KernelVersion: "6.1.0-18-amd64",
				OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.24",
				KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			},
		},
	}
	if o.PodCIDR != "" {
		n.Spec.PodCIDRs = []string{o.PodCIDR}
	}
	for k, v := range o.Annotations {
		n.Annotations[k] = v
	}
	if o.InternalIP.IsValid() {
		n.Status.Addresses = append([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: o.InternalIP.String()}}, n.Status.Addresses...)
	}
	for _, c := range []struct {
		typ    corev1.NodeConditionType
		status corev1.ConditionStatus
		reason string
	}{
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"},
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"},
	} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: c.typ, Status: c.status, Reason: c.reason, Message: "kubelet is posting ready status",
			LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	for i := range o.Images {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/team/app-%d@sha256:%064x", i, i),
				fmt.Sprintf("registry.example.com/team/app-%d:v1.%d.0", i, i),
			},
			SizeBytes: int64(10_000_000 + i*1_000_000),
		})
	}
	return n
}

// CreateNode creates a Node as a kubelet registering would.
func (c *Cluster) CreateNode(t testing.TB, name string, o NodeOptions) *corev1.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := c.Client.CoreV1().Nodes().Create(ctx, NewNode(name, o), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating node %s: %v", name, err)
	}
	return n
}

// DeleteNode deletes a Node.
func (c *Cluster) DeleteNode(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("kubetest: deleting node %s: %v", name, err)
	}
}

// WaitPodCIDR waits until the node has a podCIDR and returns its podCIDRs.
func (c *Cluster) WaitPodCIDR(t testing.TB, name string, timeout time.Duration) []netip.Prefix {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		cancel()
		switch {
		case err != nil:
			last = err.Error()
		case n.Spec.PodCIDR == "":
			last = "no podCIDR yet"
		default:
			var out []netip.Prefix
			for _, s := range n.Spec.PodCIDRs {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					t.Fatalf("kubetest: node %s: podCIDR %q: %v", name, s, err)
				}
				out = append(out, p)
			}
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kubetest: node %s has no podCIDR within %s (%s); controller manager log:\n%s", name, timeout, last, tailFile(c.LogPath("kube-controller-manager"), 30))
	return nil
}
