package dist_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnetenv"
)

const manifestPath = "kubernetes/weft.yaml"

// Host paths the binaries use, from the code where it exports them.
var (
	subnetDir  = path.Dir(subnetenv.DefaultPath) // weftd writes, the plugin reads
	cniBinDir  = "/opt/cni/bin"                  // where the runtime looks for plugins
	cniConfDir = "/etc/cni/net.d"                // where the runtime looks for conflists
	xtablesLck = "/run/xtables.lock"             // iptables -w serializes on it
	libModules = "/lib/modules"
	// plugins are what the init container must install: the conflist's
	// plugins, the delegates the flannel plugin generates, and loopback,
	// which runtimes call for every pod.
	plugins = []string{"flannel", "portmap", "bridge", "host-local", "loopback"}
)

// manifest is weft.yaml decoded strictly, one typed object per kind.
type manifest struct {
	namespace      *corev1.Namespace
	serviceAccount *corev1.ServiceAccount
	configMap      *corev1.ConfigMap
	daemonSet      *appsv1.DaemonSet
}

// loadManifest splits weft.yaml into documents and decodes each one
// strictly (an unknown or misspelt field fails) into its k8s.io/api type.
func loadManifest(t *testing.T) *manifest {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	m := &manifest{}
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if onlyComments(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			m.namespace = &corev1.Namespace{}
			obj = m.namespace
		case "v1 ServiceAccount":
			m.serviceAccount = &corev1.ServiceAccount{}
			obj = m.serviceAccount
		case "v1 ConfigMap":
			m.configMap = &corev1.ConfigMap{}
			obj = m.configMap
		case "apps/v1 DaemonSet":
			m.daemonSet = &appsv1.DaemonSet{}
			obj = m.daemonSet
		default:
			t.Fatalf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, tm.Kind, err)
		}
	}
	if m.namespace == nil || m.serviceAccount == nil || m.configMap == nil || m.daemonSet == nil {
		t.Fatalf("want a Namespace, a ServiceAccount, a ConfigMap and a DaemonSet, got %+v", m)
	}
	return m
}

func onlyComments(doc []byte) bool {
	for _, l := range strings.Split(string(doc), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// hostPathMount returns the mount path of the hostPath volume for host in c.
func hostPathMount(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, host string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == vm.Name && v.HostPath != nil && path.Clean(v.HostPath.Path) == host {
				if vm.SubPath != "" {
					t.Errorf("container %s: mount of %s uses a subPath", c.Name, host)
				}
				return vm.MountPath
			}
		}
	}
	t.Fatalf("container %s does not mount the host's %s", c.Name, host)
	return ""
}

func TestManifestObjects(t *testing.T) {
	m := loadManifest(t)
	ns := m.namespace.Name
	for _, o := range []metav1.Object{m.serviceAccount, m.configMap, m.daemonSet} {
		if o.GetNamespace() != ns {
			t.Errorf("%s is in namespace %q, want %q", o.GetName(), o.GetNamespace(), ns)
		}
	}
	ds := m.daemonSet
	spec := &ds.Spec.Template.Spec
	if spec.ServiceAccountName != m.serviceAccount.Name {
		t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, m.serviceAccount.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template's labels %v", sel, ds.Spec.Template.Labels)
	}
	if !spec.HostNetwork {
		t.Error("hostNetwork is off: weftd must program the node's own network namespace")
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("update strategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
	}
	everywhere := slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	})
	if !everywhere {
		t.Errorf("no toleration {operator: Exists}: some tainted nodes would run no agent: %+v", spec.Tolerations)
	}
	names := map[string]bool{}
	for _, v := range spec.Volumes {
		if names[v.Name] {
			t.Errorf("volume %q declared twice", v.Name)
		}
		names[v.Name] = true
		if v.ConfigMap != nil && v.ConfigMap.Name != m.configMap.Name {
			t.Errorf("volume %q names ConfigMap %q, want %q", v.Name, v.ConfigMap.Name, m.configMap.Name)
		}
		if v.Secret != nil && (v.Secret.Optional == nil || !*v.Secret.Optional) {
			t.Errorf("secret volume %q must be optional: clusters without etcd TLS have no such Secret", v.Name)
		}
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			if !names[vm.Name] {
				t.Errorf("container %s mounts undeclared volume %q", c.Name, vm.Name)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("container %s has no CPU or memory request", c.Name)
		}
		if c.Image != spec.Containers[0].Image {
			t.Errorf("container %s runs %s, the agent %s: one image for both", c.Name, c.Image, spec.Containers[0].Image)
		}
	}
}

func TestManifestAgent(t *testing.T) {
	m := loadManifest(t)
	spec := &m.daemonSet.Spec.Template.Spec
	c := container(t, spec.Containers, "weftd")

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("weftd has no securityContext with capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("weftd is privileged; NET_ADMIN and NET_RAW suffice")
	}
	for _, want := range []corev1.Capability{"NET_ADMIN", "NET_RAW"} {
		if !slices.Contains(sc.Capabilities.Add, want) {
			t.Errorf("weftd lacks capability %s", want)
		}
	}

	flags := agentFlags(t, c)
	if flags["etcd-endpoints"] == "" {
		t.Error("no etcd endpoints: set FLANNELD_ETCD_ENDPOINTS")
	}
	port, err := strconv.Atoi(flags["healthz-port"])
	if err != nil || port == 0 {
		t.Fatalf("-healthz-port is %q: the probes need the health server", flags["healthz-port"])
	}
	if ip := flags["healthz-ip"]; ip != "" && (strings.HasPrefix(ip, "127.") || ip == "::1") {
		t.Errorf("-healthz-ip %s: kubelet probes the node's address, not loopback", ip)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := probePort(t, c, p.probe.HTTPGet.Port); got != port {
			t.Errorf("%s probe on port %d, but weftd serves -healthz-port %d", p.name, got, port)
		}
	}

	subnetFile := subnetenv.DefaultPath
	if f := flags["subnet-file"]; f != "" {
		subnetFile = f
	}
	if got := hostPathMount(t, spec, c, subnetDir); got != path.Dir(subnetFile) {
		t.Errorf("the host's %s is mounted at %s, but weftd writes %s", subnetDir, got, subnetFile)
	}
	for _, host := range []string{xtablesLck, libModules} {
		if got := hostPathMount(t, spec, c, host); got != host {
			t.Errorf("the host's %s is mounted at %s", host, got)
		}
	}
}

// agentFlags returns weftd's settings as the container gives them: its
// FLANNELD_* environment, overridden by its arguments, keyed by flag name.
func agentFlags(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for _, e := range c.Env {
		if name, ok := strings.CutPrefix(e.Name, "FLANNELD_"); ok {
			if e.ValueFrom != nil {
				t.Fatalf("%s: valueFrom is not followed by this test", e.Name)
			}
			flags[strings.ToLower(strings.ReplaceAll(name, "_", "-"))] = e.Value
		}
	}
	args := append(slices.Clone(c.Command), c.Args...)
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == args[i] {
			t.Fatalf("argument %q is not a flag", args[i])
		}
		name, val, ok := strings.Cut(a, "=")
		if !ok {
			switch name {
			case "ip-masq", "iptables-forward-rules", "version", "kube-subnet-mgr":
				val = "true"
			default:
				if i+1 == len(args) {
					t.Fatalf("flag %s has no value", args[i])
				}
				i++
				val = args[i]
			}
		}
		flags[name] = val
	}
	return flags
}

func probePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Fatalf("probe names port %q, which the container does not declare", p.StrVal)
	return 0
}

func TestManifestConfigMap(t *testing.T) {
	m := loadManifest(t)
	data := m.configMap.Data

	list, err := libcni.ConfListFromBytes([]byte(data["cni-conf.json"]))
	if err != nil {
		t.Fatalf("cni-conf.json: %v", err)
	}
	if len(list.Plugins) == 0 || list.Plugins[0].Network.Type != "flannel" {
		t.Fatalf("cni-conf.json: the first plugin must be flannel, got %+v", list.Plugins)
	}
	// Runtimes on a libcni before v1.2.0 (podman 4's CNI backend) roll
	// back every ADD of a 1.1.0 network (Documentation/cni.md).
	if list.CNIVersion != "1.0.0" {
		t.Errorf("cni-conf.json: cniVersion %q, want 1.0.0, which every runtime accepts", list.CNIVersion)
	}
	shipped, err := os.ReadFile("cni/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, []byte(data["cni-conf.json"]), shipped) {
		t.Error("cni-conf.json in the ConfigMap differs from cni/10-flannel.conflist")
	}

	cfg, unknown, err := subnet.ParseConfig([]byte(data["net-conf.json"]))
	if err != nil {
		t.Fatalf("net-conf.json: %v", err)
	}
	if len(unknown) > 0 {
		t.Errorf("net-conf.json: fields weftd does not know: %v", unknown)
	}
	if cfg.BackendType != subnet.DefaultBackendType {
		t.Errorf("net-conf.json: backend %q, want the default %q", cfg.BackendType, subnet.DefaultBackendType)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// TestManifestInstallCNI runs the init container's script against temporary
// directories standing in for the image's plugin directory (taken from the
// Dockerfile), the host's CNI directories and the ConfigMap, and checks that
// every plugin and the conflist end up where the runtime looks for them.
func TestManifestInstallCNI(t *testing.T) {
	m := loadManifest(t)
	spec := &m.daemonSet.Spec.Template.Spec
	if len(spec.InitContainers) != 1 {
		t.Fatalf("want one init container, got %d", len(spec.InitContainers))
	}
	c := &spec.InitContainers[0]
	if len(c.Command) != 3 || c.Command[0] != "/bin/sh" || !strings.HasPrefix(c.Command[1], "-") {
		t.Fatalf("init command %q: want /bin/sh -ec SCRIPT", c.Command)
	}
	script := c.Command[2]

	imageDir := dockerfilePluginDir(t)
	binMount := hostPathMount(t, spec, c, cniBinDir)
	confMount := hostPathMount(t, spec, c, cniConfDir)
	var conflistMount string
	for _, vm := range c.VolumeMounts {
		if vm.SubPath == "cni-conf.json" {
			conflistMount = vm.MountPath
		}
	}
	if conflistMount == "" {
		t.Fatal("the init container does not mount cni-conf.json from the ConfigMap")
	}

	tmp := t.TempDir()
	dirs := map[string]string{imageDir: "image", binMount: "hostbin", confMount: "hostconf"}
	for from, to := range dirs {
		if err := os.MkdirAll(filepath.Join(tmp, to), 0o755); err != nil {
			t.Fatal(err)
		}
		script = strings.ReplaceAll(script, from, filepath.Join(tmp, to))
	}
	conflist := filepath.Join(tmp, "cni-conf.json")
	script = strings.ReplaceAll(script, conflistMount, conflist)
	if err := os.WriteFile(conflist, []byte(m.configMap.Data["cni-conf.json"]), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range plugins {
		if err := os.WriteFile(filepath.Join(tmp, "image", p), []byte("#!/bin/true\n"+p), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command(c.Command[0], c.Command[1], script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init script: %v\n%s", err, out)
	}
	for _, p := range plugins {
		got, err := os.ReadFile(filepath.Join(tmp, "hostbin", p))
		if err != nil || !strings.HasSuffix(string(got), p) {
			t.Errorf("plugin %s not installed to the host's %s: %v", p, cniBinDir, err)
		}
		if fi, err := os.Stat(filepath.Join(tmp, "hostbin", p)); err == nil && fi.Mode()&0o111 == 0 {
			t.Errorf("plugin %s installed without the executable bit", p)
		}
	}
	got, err := os.ReadFile(filepath.Join(tmp, "hostconf", "10-flannel.conflist"))
	if err != nil {
		t.Fatalf("conflist not installed to the host's %s: %v", cniConfDir, err)
	}
	if string(got) != m.configMap.Data["cni-conf.json"] {
		t.Error("the installed conflist differs from the ConfigMap's")
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "host*", ".*"))
	if len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}
