package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/ops/doctor"
	"github.com/weftnet/weft/ops/lab"
	"github.com/weftnet/weft/subnet/kube"
)

// kubeDoctor runs, on TestLabKube's lab (weftd -kube-subnet-mgr, Nodes
// with podCIDRs from a real kube-controller-manager): `weft lab doctor`
// on every host (healthy, each lease found as its Node's), the doctor with
// the apiserver out of reach (exit 2), a peer Node with a malformed
// annotation (exit 1, named), the own Node's annotation broken while its
// agent is stopped (exit 1 on it and on its peers; the agent restores it),
// and `weft node teardown -kube-subnet-mgr` on
// a host whose agent is stopped (local objects gone, the Node's lease
// annotations removed and its podCIDR kept; the doctor then says so), then
// the agent puts its annotations back.
func kubeDoctor(t *testing.T, l *doctorLab) {
	t.Run("doctor healthy", func(t *testing.T) {
		for _, h := range l.st.Hosts {
			r, code := l.doctor(t, h.Name, "--peers")
			if code != 0 || !r.Healthy {
				t.Errorf("%s: exit %d:\n%s", h.Name, code, r)
			}
			for _, c := range r.Checks {
				if c.Status == doctor.Problem || c.Status == doctor.Unknown {
					t.Errorf("%s: %s is %s: %s", h.Name, c.Check, c.Status, c.Verdict)
				}
			}
			if c := r.get(t, "store"); !strings.Contains(c.Verdict, "Kubernetes API https://") || !strings.Contains(c.Verdict, "Node "+h.Name) ||
				!strings.Contains(c.Verdict, "3 valid leases, 0 invalid") {
				t.Errorf("%s: store: %s", h.Name, c.Verdict)
			}
			if c := r.get(t, "subnet.env"); c.Status != doctor.OK {
				t.Errorf("%s: subnet.env: %s %s", h.Name, c.Status, c.Verdict)
			}
			if c := r.get(t, "peers reachable"); c.Status != doctor.OK || !strings.Contains(c.Verdict, "all 2 peers") {
				t.Errorf("%s: peers reachable: %s %s", h.Name, c.Status, c.Verdict)
			}
			if !strings.Contains(r.Node, "Node "+h.Name) {
				t.Errorf("%s: report node %q", h.Name, r.Node)
			}
		}
		out, err := l.run("doctor")
		if err != nil || strings.Count(out, "healthy: 0 problems") != 3 {
			t.Errorf("weft lab doctor: %v\n%s", err, out)
		}
	})

	t.Run("apiserver unreachable", func(t *testing.T) {
		h := l.host("host1")
		argv := lab.DoctorArgs(filepath.Join(l.bin, "weft"), h, l.st, "--json", "-kube-api-url", "https://127.0.0.1:1")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = lab.DoctorEnv(os.Environ(), h)
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("with the apiserver out of reach: %v, want exit 2\n%s", err, out)
		}
		var r report
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		if c := r.get(t, "store"); c.Status != doctor.Unknown || !strings.Contains(c.Verdict, "cannot read the Nodes from the Kubernetes API at https://127.0.0.1:1") ||
			!strings.Contains(strings.Join(c.Fix, "\n"), "-kubeconfig-file") {
			t.Errorf("store: %s %s %q", c.Status, c.Verdict, c.Fix)
		}
	})

	rc, err := kube.RESTConfig("", l.st.Kube.Kubeconfig, "weft-lab-test")
	if err != nil {
		t.Fatal(err)
	}
	api, err := kube.NewAPI(rc)
	if err != nil {
		t.Fatal(err)
	}
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)

	t.Run("peer Node with a malformed annotation", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p := ann.Prefix
		ghost := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ghost", Annotations: map[string]string{
			p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": `{"VNI":1,"VtepMAC":"5a:1f:00:00:00:99"}`, p + "public-ip": "not-an-ip"}}}
		if _, err := api.CreateNode(ctx, ghost); err != nil {
			t.Fatal(err)
		}
		// (kube-controller-manager gives it a podCIDR; until then it is
		// invalid for that reason)
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, code := l.doctor(t, "host1")
			c := r.get(t, "peer leases")
			if strings.Contains(c.Verdict, "not-an-ip") || time.Now().After(deadline) {
				if code != 1 || c.Status != doctor.Problem || !strings.Contains(c.Verdict, "invalid lease node/ghost") ||
					!strings.Contains(strings.Join(c.Fix, "\n"), "weft leases -kube-subnet-mgr") {
					t.Errorf("exit %d, peer leases %s %q, fix %q\n%s", code, c.Status, c.Verdict, c.Fix, r)
				}
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		if _, err := kube.RemoveLeaseAnnotations(ctx, api, ann, "ghost"); err != nil {
			t.Fatal(err)
		}
		l.waitHealthy(t, "host1")
	})

	t.Run("own Node with a malformed annotation", func(t *testing.T) {
		// With host2's agent stopped (it would restore the annotation
		// before the doctor looks), a person breaks its public-ip.
		l.pauseAgent(t, "host2")
		body := `{"metadata":{"annotations":{"` + ann.PublicIP + `":"garbage"}}}`
		if _, err := api.PatchNode(context.Background(), "host2", types.MergePatchType, []byte(body)); err != nil {
			t.Fatal(err)
		}
		l.expect(t, "host2", nil, 1, "store", doctor.Problem, ann.PublicIP+`="garbage" is not an IPv4 address`, "peers skip", "restart weftd")
		// The peers skip it and say so.
		l.expect(t, "host1", nil, 1, "peer leases", doctor.Problem, "invalid lease node/host2")
		// Let go, the agent writes its annotation back.
		l.resumeAgent(t, "host2")
		l.waitHealthy(t, "host2")
		l.waitHealthy(t, "host1")
	})

	t.Run("node teardown", func(t *testing.T) {
		h := l.host("host3")
		pid := 0
		for _, p := range l.st.Procs {
			if p.Name == h.Name {
				pid = p.PID
			}
		}
		if pid == 0 {
			t.Fatal("no weftd recorded for host3")
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		cont := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
		defer cont()
		cmd := exec.Command("ip", "netns", "exec", h.NS, filepath.Join(l.bin, "weft"), "node", "teardown",
			"-kube-subnet-mgr", "-kubeconfig-file", l.st.Kube.Kubeconfig, "-net-config-path", l.st.Kube.NetConf, "-subnet-file", h.SubnetFile)
		cmd.Env = append(os.Environ(), "NODE_NAME="+h.Name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("weft node teardown: %v\n%s", err, out)
		}
		node, err := api.GetNode(context.Background(), h.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"lease annotations removed from Node host3", "podCIDR kept:    " + node.Spec.PodCIDR, "not released",
			"deleted links:   flannel.1", "subnet.env removed: true"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("teardown output lacks %q:\n%s", want, out)
			}
		}
		if v, ok := node.Annotations[ann.SubnetManager]; ok || node.Spec.PodCIDR == "" {
			t.Errorf("Node host3 after teardown: %s=%q, podCIDR %q", ann.SubnetManager, v, node.Spec.PodCIDR)
		}
		if links := l.inHost(t, h.Name, "ip", "-o", "link", "show"); strings.Contains(links, "flannel.1") {
			t.Errorf("flannel.1 still in host3:\n%s", links)
		}
		if _, err := os.Stat(h.SubnetFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("subnet.env: %v, want it gone", err)
		}
		// The doctor on the torn-down node names what is missing.
		l.expect(t, h.Name, nil, 1, "store", doctor.Problem, "Node host3 has no "+ann.SubnetManager+"=true annotation", "weft node teardown removed the annotations")
		// The agent, let go, puts its annotations back (why teardown wants
		// it stopped first).
		cont()
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, err := api.GetNode(context.Background(), h.Name, metav1.GetOptions{})
			if err == nil && n.Annotations[ann.SubnetManager] == "true" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("weftd of host3 did not annotate its Node again: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}
