package cniplugin

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
)

// fakeExec answers every delegate call at once with a fixed result, so that
// BenchmarkLogic measures only the meta-plugin's own work.
type fakeExec struct{ version.PluginDecoder }

func (fakeExec) ExecPlugin(_ context.Context, _ string, _ []byte, _ []string) ([]byte, error) {
	return []byte(`{"cniVersion":"1.0.0","ips":[{"address":"10.244.52.2/24","gateway":"10.244.52.1"}]}`), nil
}

func (fakeExec) FindInPath(plugin string, _ []string) (string, error) { return "/fake/" + plugin, nil }

// BenchmarkLogic runs ADD and DEL in process with a fake delegate: parsing,
// subnet.env, the cache write (atomic, with fsync) and removal, without
// the process starts that dominate a real call. The cache lives on the
// disk that holds the temp directory (set TMPDIR to choose).
func BenchmarkLogic(b *testing.B) {
	dir := b.TempDir()
	env := filepath.Join(dir, "subnet.env")
	os.WriteFile(env, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	conf := []byte(`{"name":"cbr0","cniVersion":"1.0.0","type":"flannel","subnetFile":"` + env + `","dataDir":"` + filepath.Join(dir, "flannel") +
		`","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`)
	p := &Plugin{Exec: &fakeExec{}, Stdout: io.Discard, Stderr: io.Discard}
	args := &CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/x", StdinData: conf}
	for b.Loop() {
		if err := p.Add(args); err != nil {
			b.Fatal(err)
		}
		if err := p.Del(args); err != nil {
			b.Fatal(err)
		}
	}
}
