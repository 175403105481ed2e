package kubecp

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArgsNameTheDir(t *testing.T) {
	p := Plane{Dir: "/state/kube", BinDir: "/bin", Addr: netip.MustParseAddr("198.18.0.1"), Port: 6443,
		EtcdURL: "http://127.0.0.1:2379", ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), MaskSize: 24}
	a := p.APIServerArgs()
	// The lab finds its processes by a separate argument naming its dir.
	if !slices.Contains(a, "/state/kube/certs") || slices.Contains(a, "--endpoint-reconciler-type=none") {
		t.Errorf("apiserver args %q", a)
	}
	p.Addr = netip.MustParseAddr("127.0.0.1")
	if !slices.Contains(p.APIServerArgs(), "--endpoint-reconciler-type=none") {
		t.Errorf("loopback apiserver without --endpoint-reconciler-type=none")
	}
	k := strings.Join(p.ControllerManagerArgs(), " ")
	for _, want := range []string{"--kubeconfig /state/kube/kubeconfig", "--cluster-cidr 10.244.0.0/16", "--node-cidr-mask-size 24", "--allocate-node-cidrs=true", "--kube-api-qps 20"} {
		if !strings.Contains(k, want) {
			t.Errorf("controller manager args %q lack %q", k, want)
		}
	}
	if p.URL() != "https://127.0.0.1:6443" {
		t.Errorf("URL %s", p.URL())
	}
}

func TestFindBins(t *testing.T) {
	root := t.TempDir()
	old, young := filepath.Join(root, "v1-a"), filepath.Join(root, "v1-b")
	for _, d := range []string{old, young, filepath.Join(root, ".build.x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"kube-apiserver", "kube-controller-manager"} {
			if err := os.WriteFile(filepath.Join(d, b), []byte("#!/bin/true\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(old, "kube-apiserver"), past, past); err != nil {
		t.Fatal(err)
	}
	if d, ok := Cached(root); !ok || d != young {
		t.Errorf("Cached = %s, %v; want %s", d, ok, young)
	}
	if err := os.Remove(filepath.Join(young, "kube-controller-manager")); err != nil {
		t.Fatal(err)
	}
	if err := CheckBinDir(young); err == nil || !strings.Contains(err.Error(), "kube-controller-manager") {
		t.Errorf("CheckBinDir of a half build: %v", err)
	}
	if d, _ := Cached(root); d != old {
		t.Errorf("Cached with a half build = %s, want %s", d, old)
	}
	if _, ok := Cached(filepath.Join(root, "none")); ok {
		t.Error("Cached found something in a missing dir")
	}
	// FindScript walks up from the package directory to the checkout.
	wd, _ := os.Getwd()
	if s, err := FindScript(wd); err != nil || !strings.HasSuffix(s, "scripts/kube-bins.sh") {
		t.Errorf("FindScript = %s, %v", s, err)
	}
	if _, err := FindScript(root); err == nil {
		t.Error("FindScript found a script outside a checkout")
	}
}
