package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/subnet/kube"
)

// KubeState is what `weft lab up --kube` adds: a kube-apiserver on the
// bridge address over the lab's etcd, a kube-controller-manager that
// allocates the hosts' podCIDRs, and the files the agents read.
type KubeState struct {
	BinDir     string `json:"binDir"`
	Dir        string `json:"dir"`
	Port       int    `json:"port"`
	Kubeconfig string `json:"kubeconfig"`
	NetConf    string `json:"netConf"`
}

// plane returns the control plane of st: podCIDRs of /24 from the lab's
// network and, in a dual-stack lab, of /64 from its IPv6 network.
func (k *KubeState) plane(st *State) kubecp.Plane {
	p := kubecp.Plane{
		Dir: k.Dir, BinDir: k.BinDir, Addr: st.BridgeAddr, Port: k.Port,
		EtcdURL:     "http://127.0.0.1:" + strconv.Itoa(st.EtcdPort),
		ClusterCIDR: st.Network, MaskSize: 24,
	}
	if st.IPv6Network.IsValid() {
		p.IPv6ClusterCIDR, p.IPv6MaskSize = st.IPv6Network, 64
	}
	return p
}

// netConf returns the lab's net-conf.json in Kubernetes mode.
func netConf(st *State) string {
	return netConfig(st.Network, st.IPv6Network, st.NoIPv4, st.Backend, st.NFTables, false)
}

// freePortOn returns a TCP port on addr that was free a moment ago.
func freePortOn(addr netip.Addr) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startKube starts the control plane, waits for the apiserver, registers a
// Node per host as its kubelet would, and writes net-conf.json.
func (u *upper) startKube(ctx context.Context, st *State) error {
	port, err := freePortOn(st.BridgeAddr)
	if err != nil {
		return err
	}
	dir := filepath.Join(u.o.StateDir, "kube")
	k := &KubeState{BinDir: u.o.KubeBinDir, Dir: dir, Port: port,
		Kubeconfig: filepath.Join(dir, "kubeconfig"), NetConf: filepath.Join(dir, "net-conf.json")}
	if err := u.rec.update(func(s *State) { s.Kube = k }); err != nil {
		return err
	}
	p := k.plane(st)
	if err := p.WriteFiles(); err != nil {
		return fmt.Errorf("kube-apiserver files: %w", err)
	}
	u.p.say("starting kube-apiserver on %s (from %s)", p.URL(), k.BinDir)
	apiLog := filepath.Join(dir, "kube-apiserver.log")
	if err := u.startProc("kube-apiserver", append([]string{p.APIServer()}, p.APIServerArgs()...), apiLog); err != nil {
		return err
	}
	exited := u.exitedCh("kube-apiserver")
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.Ready(rctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("kube-apiserver exited; the end of %s:\n%s", apiLog, tail(apiLog, 10))
		case <-ctx.Done():
			return fmt.Errorf("waiting for kube-apiserver at %s: %w (last: %v); see %s", p.URL(), ctx.Err(), err, apiLog)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := p.WriteKubeconfig(); err != nil {
		return err
	}
	cidrs := fmt.Sprintf("/24s of %s", st.Network)
	if st.IPv6Network.IsValid() {
		cidrs += fmt.Sprintf(" and /64s of %s", st.IPv6Network)
	}
	u.p.say("kube-apiserver ready; starting kube-controller-manager (podCIDRs: %s)", cidrs)
	if err := u.startProc("kube-controller-manager", append([]string{p.ControllerManager()}, p.ControllerManagerArgs()...), filepath.Join(dir, "kube-controller-manager.log")); err != nil {
		return err
	}
	cfg := netConf(st)
	if err := os.WriteFile(k.NetConf, []byte(cfg+"\n"), 0o644); err != nil {
		return err
	}
	rc, err := kube.RESTConfig("", k.Kubeconfig, "weft-lab")
	if err != nil {
		return err
	}
	api, err := kube.NewAPI(rc)
	if err != nil {
		return err
	}
	for _, h := range st.Hosts {
		addrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: h.Addr.String()}}
		if h.Addr6.IsValid() {
			addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: h.Addr6.String()})
		}
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: map[string]string{"kubernetes.io/hostname": h.Name, "kubernetes.io/os": "linux"}},
			Status:     corev1.NodeStatus{Addresses: append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: h.Name})},
		}
		if _, err := api.CreateNode(ctx, n); err != nil {
			return fmt.Errorf("registering Node %s: %w", h.Name, err)
		}
	}
	u.p.say("registered %d Nodes; net-conf.json %s", len(st.Hosts), cfg)
	return nil
}

// startProc starts a detached lab process and records its PID.
func (u *upper) startProc(name string, argv []string, logPath string) error {
	pid, exited, err := startDetached(argv, logPath, os.Environ())
	if err != nil {
		return err
	}
	u.setExited(name, exited)
	return u.rec.update(func(s *State) {
		s.Procs = append(s.Procs, Proc{Name: name, PID: pid, Exe: argv[0], Log: logPath})
	})
}
