package main

import (
	"os/exec"
	"strings"
	"testing"
)

// heavy are import path prefixes the plugin must not link. A runtime execs
// it for every ADD, DEL and CHECK, so its process start is on every pod's
// path: etcd, gRPC and Kubernetes are the agent's business; OpenTelemetry
// (which libcni's pkg/invoke links, and with it net/http and crypto/tls)
// made the plugin start slower than the reference plugins, so the plugin
// runs its delegate itself (cniplugin/delegate.go); pkg/skel links pkg/ns
// (netns, x/sys/unix) and compiles a regexp at start, so the plugin reads
// its call itself too (cniplugin/dispatch.go). An entry ending in "/"
// is a tree; one without is that package and its subpackages.
var heavy = []string{
	"go.etcd.io/",
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
	"k8s.io/",
	"go.opentelemetry.io/",
	"github.com/containernetworking/cni/pkg/invoke",
	"github.com/containernetworking/cni/libcni",
	"github.com/containernetworking/cni/pkg/skel",
	"github.com/containernetworking/cni/pkg/ns",
	"github.com/vishvananda/netns",
	"regexp",
	"github.com/vishvananda/netlink",
	"net/http",
	"crypto/tls",
	"crypto/x509",
	"log/slog",
}

// TestNoHeavyImports keeps the plugin quick to start: nothing in heavy is in
// its import graph.
func TestNoHeavyImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftnet/weft/cmd/flannel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), out)
	}
	for _, dep := range deps {
		for _, h := range heavy {
			if dep == h || strings.HasPrefix(dep, strings.TrimSuffix(h, "/")+"/") {
				t.Errorf("cmd/flannel depends on %s (forbidden: %s)", dep, h)
			}
		}
	}
}
