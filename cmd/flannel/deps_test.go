package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyImports keeps the plugin quick to start: a runtime execs it for
// every pod, so it must not link etcd, gRPC or Kubernetes packages.
func TestNoHeavyImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftnet/weft/cmd/flannel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, heavy := range []string{"go.etcd.io/", "google.golang.org/grpc", "k8s.io/"} {
			if strings.HasPrefix(dep, heavy) {
				t.Errorf("cmd/flannel depends on %s", dep)
			}
		}
	}
}
