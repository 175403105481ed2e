package dist_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// The shipped manifests, one per store. Each names what only its mode has;
// the rest of the two must be the same (TestManifestsShareWiring).
var manifests = []shippedManifest{
	{
		name: "etcd", path: "kubernetes/weft.yaml",
		onlyVolumes: []string{"etcd-tls"}, onlyMounts: []string{"etcd-tls"},
	},
	{
		name: "kube", path: "kubernetes/weft-kube.yaml", kube: true,
		onlyMounts: []string{"weft-config"}, onlyArgs: []string{"-kube-subnet-mgr"},
	},
}

// shippedManifest is one manifest file and what only its mode uses.
type shippedManifest struct {
	name, path string
	kube       bool // runs weftd with the Kubernetes store
	// Volumes, weftd mounts and weftd arguments only this mode uses. weftd's
	// environment is always the mode's own.
	onlyVolumes, onlyMounts, onlyArgs []string
}

// Host paths the binaries use, from the code where it exports them.
var (
	subnetDir  = path.Dir(subnetenv.DefaultPath) // weftd writes, the plugin reads
	cniBinDir  = "/opt/cni/bin"                  // where the runtime looks for plugins
	cniConfDir = "/etc/cni/net.d"                // where the runtime looks for conflists
	xtablesLck = "/run/xtables.lock"             // iptables -w serializes on it
	libModules = "/lib/modules"
	tunDir     = "/dev/net" // the WireGuard userspace engine opens tun in it
	// plugins are what the init container must install: the conflist's
	// plugins, the delegates the flannel plugin generates, and loopback,
	// which runtimes call for every pod.
	plugins = []string{"flannel", "portmap", "bridge", "host-local", "loopback"}
)

// manifest is one manifest decoded strictly, one typed object per kind.
type manifest struct {
	shippedManifest
	namespace          *corev1.Namespace
	serviceAccount     *corev1.ServiceAccount
	clusterRole        *rbacv1.ClusterRole
	clusterRoleBinding *rbacv1.ClusterRoleBinding
	configMap          *corev1.ConfigMap
	daemonSet          *appsv1.DaemonSet
}

// forEachManifest runs f as a subtest on every shipped manifest.
func forEachManifest(t *testing.T, f func(t *testing.T, m *manifest)) {
	for _, mf := range manifests {
		t.Run(mf.name, func(t *testing.T) { f(t, loadManifest(t, mf)) })
	}
}

// loadManifest splits the manifest file into documents and decodes each one
// strictly (an unknown or misspelt field fails) into its k8s.io/api type.
func loadManifest(t *testing.T, mf shippedManifest) *manifest {
	t.Helper()
	file := mf.path
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	m := &manifest{shippedManifest: mf}
	seen := map[string]bool{}
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if onlyComments(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		kind := tm.APIVersion + " " + tm.Kind
		if seen[kind] {
			t.Fatalf("%s: document %d: a second %s", file, i, kind)
		}
		seen[kind] = true
		var obj any
		switch kind {
		case "v1 Namespace":
			m.namespace = &corev1.Namespace{}
			obj = m.namespace
		case "v1 ServiceAccount":
			m.serviceAccount = &corev1.ServiceAccount{}
			obj = m.serviceAccount
		case "rbac.authorization.k8s.io/v1 ClusterRole":
			m.clusterRole = &rbacv1.ClusterRole{}
			obj = m.clusterRole
		case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
			m.clusterRoleBinding = &rbacv1.ClusterRoleBinding{}
			obj = m.clusterRoleBinding
		case "v1 ConfigMap":
			m.configMap = &corev1.ConfigMap{}
			obj = m.configMap
		case "apps/v1 DaemonSet":
			m.daemonSet = &appsv1.DaemonSet{}
			obj = m.daemonSet
		default:
			t.Fatalf("%s: document %d: unexpected %s %s", file, i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: document %d (%s): %v", file, i, tm.Kind, err)
		}
	}
	if m.namespace == nil || m.serviceAccount == nil || m.configMap == nil || m.daemonSet == nil {
		t.Fatalf("%s: want a Namespace, a ServiceAccount, a ConfigMap and a DaemonSet, got %+v", file, m)
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

// hostPathVolume returns the hostPath volume of spec for the host's path.
func hostPathVolume(t *testing.T, spec *corev1.PodSpec, host string) *corev1.HostPathVolumeSource {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.HostPath != nil && path.Clean(v.HostPath.Path) == host {
			return v.HostPath
		}
	}
	t.Fatalf("no hostPath volume for the host's %s", host)
	return nil
}

func TestManifestObjects(t *testing.T) {
	forEachManifest(t, func(t *testing.T, m *manifest) {
		ns := m.namespace.Name
		if got := m.namespace.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
			t.Errorf("namespace %s enforces pod security %q: hostNetwork and hostPath need privileged", ns, got)
		}
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
		if spec.PriorityClassName != "system-node-critical" {
			t.Errorf("priorityClassName %q: the node's network must not be evicted before the pods using it", spec.PriorityClassName)
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
	})
}

// TestManifestAgent checks the weftd container of each manifest against the
// flags it is given: the probes reach the health server, the host paths
// weftd and its helpers use are mounted where weftd looks for them, and the
// mode's own settings (etcd endpoints; or the Kubernetes store's node name,
// net-conf.json and API credentials) are there.
func TestManifestAgent(t *testing.T) {
	forEachManifest(t, func(t *testing.T, m *manifest) {
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
		for _, host := range []string{xtablesLck, libModules, tunDir} {
			if got := hostPathMount(t, spec, c, host); got != host {
				t.Errorf("the host's %s is mounted at %s", host, got)
			}
		}
		// A missing lock file must be created as a file: a directory in its
		// place would break every iptables -w on the host.
		if v := hostPathVolume(t, spec, xtablesLck); v.Type == nil || *v.Type != corev1.HostPathFileOrCreate {
			t.Errorf("the host's %s is a hostPath of type %v, want FileOrCreate", xtablesLck, v.Type)
		}

		if m.kube {
			checkKubeAgent(t, m, c, flags)
			return
		}
		if flags["etcd-endpoints"] == "" {
			t.Error("no etcd endpoints: set FLANNELD_ETCD_ENDPOINTS")
		}
		if flags["kube-subnet-mgr"] != "" {
			t.Error("the etcd-mode manifest runs weftd with -kube-subnet-mgr")
		}
	})
}

// checkKubeAgent checks what weftd in Kubernetes mode needs from its pod:
// the flag, the node name (NODE_NAME, or POD_NAME and POD_NAMESPACE for the
// fallback), net-conf.json at -net-config-path, and no etcd settings.
func checkKubeAgent(t *testing.T, m *manifest, c *corev1.Container, flags map[string]string) {
	if flags["kube-subnet-mgr"] != "true" {
		t.Error("weftd runs without -kube-subnet-mgr")
	}
	for name := range flags {
		if strings.HasPrefix(name, "etcd-") {
			t.Errorf("-%s given in Kubernetes mode, where weftd ignores it with a warning", name)
		}
	}
	want := map[string]string{
		"NODE_NAME":     "spec.nodeName",
		"POD_NAME":      "metadata.name",
		"POD_NAMESPACE": "metadata.namespace",
	}
	for _, e := range c.Env {
		fp, ok := want[e.Name]
		if !ok {
			continue
		}
		delete(want, e.Name)
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != fp {
			t.Errorf("env %s: want the downward API's %s, got %+v", e.Name, fp, e)
		}
	}
	for name, fp := range want {
		t.Errorf("env %s (from %s) missing", name, fp)
	}

	netConf := kube.DefaultNetConfPath
	if f := flags["net-config-path"]; f != "" {
		netConf = f
	}
	key := configMapKeyAt(t, &m.daemonSet.Spec.Template.Spec, c, netConf)
	if _, ok := m.configMap.Data[key]; !ok {
		t.Errorf("weftd reads %s, served by ConfigMap key %q, which %s lacks", netConf, key, m.configMap.Name)
	}
	if key != "net-conf.json" {
		t.Errorf("weftd reads %s from ConfigMap key %q, want net-conf.json", netConf, key)
	}
}

// configMapKeyAt returns the key of the manifest's ConfigMap that c sees at
// file, through a mount of the whole map or of one key (subPath).
func configMapKeyAt(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, file string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			if vm.SubPath != "" {
				if path.Clean(vm.MountPath) == file {
					return vm.SubPath
				}
				continue
			}
			rel, ok := strings.CutPrefix(file, path.Clean(vm.MountPath)+"/")
			if !ok {
				continue
			}
			if len(v.ConfigMap.Items) == 0 {
				return rel
			}
			for _, it := range v.ConfigMap.Items {
				if path.Clean(it.Path) == rel {
					return it.Key
				}
			}
		}
	}
	t.Fatalf("container %s sees no ConfigMap key at %s", c.Name, file)
	return ""
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
			case "ip-masq", "iptables-forward-rules", "version", "kube-subnet-mgr", "set-node-network-unavailable":
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

// flannelNetConf is net-conf.json as flannel's kube-flannel.yml ships it. A
// cluster moving from that manifest to ours keeps its network config.
const flannelNetConf = `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan"}}`

func TestManifestConfigMap(t *testing.T) {
	shipped, err := os.ReadFile("cni/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	forEachManifest(t, func(t *testing.T, m *manifest) {
		data := m.configMap.Data
		keys := slices.Sorted(maps.Keys(data))
		if !slices.Equal(keys, []string{"cni-conf.json", "net-conf.json"}) {
			t.Errorf("ConfigMap keys %v, want cni-conf.json and net-conf.json", keys)
		}

		list, err := libcni.ConfListFromBytes([]byte(data["cni-conf.json"]))
		if err != nil {
			t.Fatalf("cni-conf.json: %v", err)
		}
		if len(list.Plugins) == 0 || list.Plugins[0].Network.Type != "flannel" {
			t.Fatalf("cni-conf.json: the first plugin must be flannel, got %+v", list.Plugins)
		}
		// Runtimes on a libcni before v1.2.0 (podman 4's CNI backend)
		// roll back every ADD of a 1.1.0 network (Documentation/cni.md).
		if list.CNIVersion != "1.0.0" {
			t.Errorf("cni-conf.json: cniVersion %q, want 1.0.0, which every runtime accepts", list.CNIVersion)
		}
		if !jsonEqual(t, []byte(data["cni-conf.json"]), shipped) {
			t.Error("cni-conf.json in the ConfigMap differs from cni/10-flannel.conflist")
		}

		// Each mode's parser: in Kubernetes mode weftd reads net-conf.json
		// with flanneld's kube-mode rules (subnet sizes come from the
		// podCIDRs and are ignored, the families are validated).
		netConf := []byte(data["net-conf.json"])
		var cfg *subnet.Config
		var unknown, ignored []string
		if m.kube {
			cfg, unknown, ignored, err = subnet.ParseKubeConfig(netConf)
		} else {
			cfg, unknown, err = subnet.ParseConfig(netConf)
		}
		if err != nil {
			t.Fatalf("net-conf.json: %v", err)
		}
		if len(ignored) > 0 {
			t.Errorf("net-conf.json sets %v, which Kubernetes mode ignores (subnets are podCIDRs)", ignored)
		}
		if len(unknown) > 0 {
			t.Errorf("net-conf.json: fields weftd does not know: %v", unknown)
		}
		if cfg.BackendType != subnet.DefaultBackendType {
			t.Errorf("net-conf.json: backend %q, want the default %q", cfg.BackendType, subnet.DefaultBackendType)
		}
		if !m.kube {
			return
		}
		if !jsonEqual(t, netConf, []byte(flannelNetConf)) {
			t.Errorf("net-conf.json differs from kube-flannel.yml's %s", flannelNetConf)
		}
	})
}

// TestConflistMatchesCNIDoc checks that the conflist Documentation/cni.md
// shows as the stock one is the one shipped (and so the manifests').
func TestConflistMatchesCNIDoc(t *testing.T) {
	doc, err := os.ReadFile("../Documentation/cni.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n## The conflist\n")
	if !ok {
		t.Fatal("cni.md has no section \"The conflist\"")
	}
	_, rest, ok = strings.Cut(rest, "```json\n")
	if !ok {
		t.Fatal("cni.md: no JSON block in \"The conflist\"")
	}
	block, _, _ := strings.Cut(rest, "```")
	shipped, err := os.ReadFile("cni/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, []byte(block), shipped) {
		t.Errorf("cni.md shows the stock conflist as\n%s\nbut cni/10-flannel.conflist is\n%s", block, shipped)
	}
}

// rbacPermission is one verb on one resource.
type rbacPermission struct{ group, resource, verb string }

// kubeStorePermissions are what the Kubernetes store does with the API:
// read its own pod to find its node when NODE_NAME is unset; list and watch
// Nodes for leases and get its own; patch its own node's annotations and
// NetworkUnavailable condition through nodes/<name>/status. The same as
// flanneld's ClusterRole.
// TODO(kube store): take this list from subnet/kube once it lands, so that
// a new API call there cannot go without its permission here.
var kubeStorePermissions = []rbacPermission{
	{"", "pods", "get"},
	{"", "nodes", "get"},
	{"", "nodes", "list"},
	{"", "nodes", "watch"},
	{"", "nodes/status", "patch"},
}

// TestManifestRBAC checks the API access of each manifest: none in etcd
// mode (no token mounted), and in Kubernetes mode exactly what the store
// needs, granted to the DaemonSet's ServiceAccount.
func TestManifestRBAC(t *testing.T) {
	forEachManifest(t, func(t *testing.T, m *manifest) {
		spec := &m.daemonSet.Spec.Template.Spec
		saToken := m.serviceAccount.AutomountServiceAccountToken == nil || *m.serviceAccount.AutomountServiceAccountToken
		mounted := saToken
		if spec.AutomountServiceAccountToken != nil {
			mounted = *spec.AutomountServiceAccountToken
		}
		if !m.kube {
			if m.clusterRole != nil || m.clusterRoleBinding != nil {
				t.Error("the etcd-mode manifest grants API access weftd does not use")
			}
			if saToken || mounted {
				t.Error("the etcd-mode manifest mounts a ServiceAccount token weftd does not use")
			}
			return
		}
		if !mounted {
			t.Error("no ServiceAccount token in the pod: weftd cannot use the in-cluster config")
		}
		if m.clusterRole == nil || m.clusterRoleBinding == nil {
			t.Fatal("want a ClusterRole and a ClusterRoleBinding")
		}
		got := map[rbacPermission]bool{}
		for _, r := range m.clusterRole.Rules {
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Errorf("rule %+v: resourceNames and nonResourceURLs are not expected", r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						got[rbacPermission{g, res, v}] = true
					}
				}
			}
		}
		for _, p := range kubeStorePermissions {
			if !got[p] {
				t.Errorf("ClusterRole %s lacks %q on %q (group %q)", m.clusterRole.Name, p.verb, p.resource, p.group)
			}
			delete(got, p)
		}
		for p := range got {
			t.Errorf("ClusterRole %s grants %q on %q (group %q), which the store does not use", m.clusterRole.Name, p.verb, p.resource, p.group)
		}

		b := m.clusterRoleBinding
		if b.RoleRef.APIGroup != rbacv1.GroupName || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != m.clusterRole.Name {
			t.Errorf("ClusterRoleBinding %s refers to %+v, want ClusterRole %s", b.Name, b.RoleRef, m.clusterRole.Name)
		}
		wantSubject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: spec.ServiceAccountName, Namespace: m.namespace.Name}
		if len(b.Subjects) != 1 || b.Subjects[0] != wantSubject {
			t.Errorf("ClusterRoleBinding %s binds %+v, want only %+v", b.Name, b.Subjects, wantSubject)
		}
	})
}

// sharedWiring returns the objects of m without what only its mode uses
// (the store's settings, its credentials and their volumes): what both
// manifests must agree on.
func sharedWiring(t *testing.T, m *manifest) map[string]any {
	t.Helper()
	mf := m.shippedManifest
	ds := m.daemonSet.DeepCopy()
	spec := &ds.Spec.Template.Spec
	spec.AutomountServiceAccountToken = nil
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return slices.Contains(mf.onlyVolumes, v.Name) })
	for i := range spec.Containers {
		c := &spec.Containers[i]
		c.Env = nil
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return slices.Contains(mf.onlyArgs, a) })
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return slices.Contains(mf.onlyMounts, vm.Name) })
	}
	return map[string]any{
		"Namespace":                   m.namespace,
		"ServiceAccount metadata":     m.serviceAccount.ObjectMeta,
		"ConfigMap metadata":          m.configMap.ObjectMeta,
		"ConfigMap cni-conf.json":     m.configMap.Data["cni-conf.json"],
		"DaemonSet (its shared part)": ds,
	}
}

// TestManifestsShareWiring checks that the two manifests differ only in what
// their modes need: the image, the init container, the probes, the security
// context, the shared volumes and everything else are the same, so that a
// fix to one cannot be forgotten in the other.
func TestManifestsShareWiring(t *testing.T) {
	if len(manifests) != 2 {
		t.Fatalf("want two manifests, have %d", len(manifests))
	}
	a := sharedWiring(t, loadManifest(t, manifests[0]))
	b := sharedWiring(t, loadManifest(t, manifests[1]))
	for _, k := range slices.Sorted(maps.Keys(a)) {
		ja, err := json.MarshalIndent(a[k], "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		jb, err := json.MarshalIndent(b[k], "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ja, jb) {
			t.Errorf("%s differs between %s and %s beyond their modes:\n%s", k, manifests[0].path, manifests[1].path, firstDifference(string(ja), string(jb)))
		}
	}
}

// firstDifference shows the first line where a and b differ, with context.
func firstDifference(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	i := 0
	for i < len(la) && i < len(lb) && la[i] == lb[i] {
		i++
	}
	from := max(0, i-3)
	line := func(l []string, i int) string {
		if i < len(l) {
			return l[i]
		}
		return "(end)"
	}
	return fmt.Sprintf("  ...\n  %s\n- %s\n+ %s", strings.Join(la[from:i], "\n  "), line(la, i), line(lb, i))
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
	forEachManifest(t, testInstallCNI)
}

func testInstallCNI(t *testing.T, m *manifest) {
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

// TestManifestsReadme checks kubernetes/README.md against the directory: it
// names every manifest there, and every file it applies exists.
func TestManifestsReadme(t *testing.T) {
	data, err := os.ReadFile("kubernetes/README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	for _, f := range files {
		if !strings.Contains(readme, "`"+filepath.Base(f)+"`") {
			t.Errorf("kubernetes/README.md does not name %s", filepath.Base(f))
		}
	}
	for _, mf := range manifests {
		if !slices.Contains(files, mf.path) {
			t.Errorf("the test knows %s, which is not in kubernetes/", mf.path)
		}
	}
	if len(files) != len(manifests) {
		t.Errorf("kubernetes/ holds %v; the tests know %d manifests: add the new one to manifests", files, len(manifests))
	}
	for _, m := range regexp.MustCompile(`kubectl (?:apply|delete) -f ([\w./-]+)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join("kubernetes", m[1])); err != nil {
			t.Errorf("kubernetes/README.md applies %s: %v", m[1], err)
		}
	}
}

// TestKubeModeDocNetConf checks that the net-conf.json configuration.md
// shows for Kubernetes mode is the one weft-kube.yaml ships.
func TestKubeModeDocNetConf(t *testing.T) {
	doc, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n### net-conf.json in Kubernetes mode\n")
	if !ok {
		t.Fatalf("%s has no section \"net-conf.json in Kubernetes mode\"", configDoc)
	}
	_, rest, ok = strings.Cut(rest, "```json\n")
	if !ok {
		t.Fatalf("%s: no JSON block in \"net-conf.json in Kubernetes mode\"", configDoc)
	}
	block, _, _ := strings.Cut(rest, "```")
	for _, mf := range manifests {
		if !mf.kube {
			continue
		}
		shipped := loadManifest(t, mf).configMap.Data["net-conf.json"]
		if !jsonEqual(t, []byte(block), []byte(shipped)) {
			t.Errorf("%s shows net-conf.json as %s, but %s ships %s", configDoc, block, mf.path, shipped)
		}
	}
}
