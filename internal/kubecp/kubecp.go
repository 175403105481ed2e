// Package kubecp describes the small Kubernetes control plane Weft's tests
// and `weft lab up --kube` run: one kube-apiserver over an etcd, with a
// static admin token, AlwaysAllow authorization and a self-signed serving
// certificate, and one kube-controller-manager that allocates podCIDRs. It
// writes the files they need, gives their command lines and the kubeconfig
// for clients, and finds the binaries scripts/kube-bins.sh builds. It
// starts nothing: the caller owns the processes.
package kubecp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// BinDirEnv names the environment variable holding the directory with
// kube-apiserver and kube-controller-manager.
const BinDirEnv = "WEFT_KUBE_BIN_DIR"

// DefaultCache is scripts/kube-bins.sh's default cache root.
const DefaultCache = "/var/cache/weft/kube"

// Token is the admin bearer token the apiserver accepts.
const Token = "weft-kubecp-admin"

// ServiceCIDR is the apiserver's --service-cluster-ip-range.
const ServiceCIDR = "10.96.0.0/16"

// Plane is one control plane's settings; Dir holds its files.
type Plane struct {
	Dir     string
	BinDir  string
	Addr    netip.Addr // bind and advertise address
	Port    int        // --secure-port (cannot be 0)
	EtcdURL string
	// ClusterCIDR and MaskSize are the controller manager's
	// --cluster-cidr and --node-cidr-mask-size.
	ClusterCIDR netip.Prefix
	MaskSize    int
	// ControllerQPS is the controller manager's --kube-api-qps (20 when 0).
	ControllerQPS int
}

// URL is the apiserver's URL.
func (p Plane) URL() string {
	return "https://" + net.JoinHostPort(p.Addr.String(), strconv.Itoa(p.Port))
}

// APIServer and ControllerManager are the binaries' paths.
func (p Plane) APIServer() string { return filepath.Join(p.BinDir, "kube-apiserver") }

// ControllerManager is the path of kube-controller-manager.
func (p Plane) ControllerManager() string { return filepath.Join(p.BinDir, "kube-controller-manager") }

// Kubeconfig is where WriteKubeconfig writes the admin kubeconfig.
func (p Plane) Kubeconfig() string { return filepath.Join(p.Dir, "kubeconfig") }

// WriteFiles writes the service-account key and the token file, and makes
// the certificate directory.
func (p Plane) WriteFiles() error {
	if err := os.MkdirAll(filepath.Join(p.Dir, "certs"), 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.Dir, "tokens.csv"), []byte(Token+`,admin,admin-uid,"system:masters"`+"\n"), 0o600)
}

// APIServerArgs is kube-apiserver's command line (without the program).
// Paths are separate arguments, so that the command line names Dir.
func (p Plane) APIServerArgs() []string {
	args := []string{
		"--etcd-servers", p.EtcdURL,
		"--bind-address", p.Addr.String(),
		"--advertise-address", p.Addr.String(),
		"--secure-port", strconv.Itoa(p.Port),
		"--cert-dir", filepath.Join(p.Dir, "certs"),
		"--service-account-key-file", filepath.Join(p.Dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(p.Dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDR,
		"--token-auth-file", filepath.Join(p.Dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow",
		"--anonymous-auth=false",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	}
	if p.Addr.IsLoopback() {
		// Otherwise: "cannot use public IP 127.0.0.1 with endpoint reconciler".
		args = append(args, "--endpoint-reconciler-type=none")
	}
	return args
}

// ControllerManagerArgs is kube-controller-manager's command line: only
// the node IPAM controller, allocating podCIDRs.
func (p Plane) ControllerManagerArgs() []string {
	qps := p.ControllerQPS
	if qps == 0 {
		qps = 20
	}
	return []string{
		"--kubeconfig", p.Kubeconfig(),
		"--controllers", "node-ipam-controller",
		"--allocate-node-cidrs=true",
		"--cluster-cidr", p.ClusterCIDR.String(),
		"--node-cidr-mask-size", strconv.Itoa(p.MaskSize),
		"--service-cluster-ip-range", ServiceCIDR,
		"--leader-elect=false",
		"--secure-port=0",
		"--kube-api-qps", strconv.Itoa(qps),
		"--kube-api-burst", strconv.Itoa(2 * qps),
		"--v=1",
	}
}

// Ready asks the apiserver's /readyz once.
func (p Plane) Ready(ctx context.Context) error {
	hc := &http.Client{
		Timeout: 5 * time.Second,
		// The certificate is the apiserver's own, made at its first start;
		// the kubeconfig written afterwards trusts it.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/readyz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("/readyz: %s %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// WriteKubeconfig writes the admin kubeconfig, trusting the apiserver's
// self-signed certificate (its bundle holds the signing CA). The apiserver
// must have started once (it writes the certificate).
func (p Plane) WriteKubeconfig() error {
	ca, err := os.ReadFile(filepath.Join(p.Dir, "certs", "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("reading the apiserver's certificate: %w", err)
	}
	caFile := filepath.Join(p.Dir, "ca.crt")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		return err
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weft
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: weft
  context:
    cluster: weft
    user: admin
current-context: weft
`, p.URL(), caFile, Token)
	return os.WriteFile(p.Kubeconfig(), []byte(kc), 0o600)
}

// CheckBinDir reports whether dir holds both executables.
func CheckBinDir(dir string) error {
	for _, b := range []string{"kube-apiserver", "kube-controller-manager"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s has no executable %s", dir, b)
		}
	}
	return nil
}

// FindScript looks for scripts/kube-bins.sh in each of dirs and their
// parents.
func FindScript(dirs ...string) (string, error) {
	for _, dir := range dirs {
		for dir != "" {
			p := filepath.Join(dir, "scripts", "kube-bins.sh")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("scripts/kube-bins.sh is not in a parent of " + strings.Join(dirs, " or "))
}

// RunScript runs scripts/kube-bins.sh (building the binaries on first use,
// its progress going to progress) and returns the directory it prints.
func RunScript(script string, progress io.Writer) (string, error) {
	cmd := exec.Command("bash", script)
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("`bash %s` failed (%v); run it by hand to see why", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	return dir, CheckBinDir(dir)
}

// Cached returns the newest complete build in the cache root, if any.
func Cached(root string) (string, bool) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", false
	}
	type cand struct {
		dir string
		mod time.Time
	}
	var cs []cand
	for _, e := range ents {
		d := filepath.Join(root, e.Name())
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || CheckBinDir(d) != nil {
			continue
		}
		if fi, err := os.Stat(filepath.Join(d, "kube-apiserver")); err == nil {
			cs = append(cs, cand{d, fi.ModTime()})
		}
	}
	if len(cs) == 0 {
		return "", false
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].mod.After(cs[j].mod) })
	return cs[0].dir, true
}
