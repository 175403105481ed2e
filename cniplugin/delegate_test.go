package cniplugin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// writePlugin writes an executable shell script named name into dir.
func writePlugin(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestDelegateExecProtocol runs a real process as the delegate and checks
// the CNI exec protocol on both sides: it finds the delegate in CNI_PATH,
// passes the config on stdin and the plugin's environment with
// CNI_COMMAND replaced (the runtime's other CNI_* and a trace context kept),
// reads the ADD result from stdout and passes the delegate's stderr on.
func TestDelegateExecProtocol(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record")
	// The delegate records its stdin and environment, then prints a
	// result without a cniVersion (which the config's version fills in).
	writePlugin(t, dir, "recorder", `cat > `+record+`.stdin
env > `+record+`.env
echo "a warning" >&2
echo '{"ips":[{"address":"10.244.52.2/24","gateway":"10.244.52.1"}]}'
`)
	t.Setenv("CNI_PATH", "/nonexistent"+string(filepath.ListSeparator)+dir)
	t.Setenv("CNI_COMMAND", "ADD")
	t.Setenv("CNI_CONTAINERID", "c1")
	t.Setenv("TRACEPARENT", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	var stderr bytes.Buffer
	p := &Plugin{Stderr: &stderr}
	conf := []byte(`{"cniVersion":"0.4.0","name":"n","type":"recorder"}`)

	res, err := p.delegateAdd(context.Background(), "recorder", conf)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "0.4.0" {
		t.Errorf("result version %s, want the config's 0.4.0", res.Version())
	}
	r, err := types100.GetResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.244.52.2/24" {
		t.Errorf("result IPs %v, want 10.244.52.2/24", r.IPs)
	}
	if got, _ := os.ReadFile(record + ".stdin"); !bytes.Equal(got, conf) {
		t.Errorf("delegate's stdin %q, want the config %q", got, conf)
	}
	if stderr.String() != "a warning\n" {
		t.Errorf("delegate's stderr passed on as %q, want %q", stderr.String(), "a warning\n")
	}

	if err := p.delegateVerb(context.Background(), "DEL", "recorder", conf); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	envData, _ := os.ReadFile(record + ".env")
	env := strings.Split(strings.TrimSpace(string(envData)), "\n")
	for _, want := range []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c1", "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"} {
		if !slices.Contains(env, want) {
			t.Errorf("delegate's environment lacks %s: %v", want, env)
		}
	}
	if n := countPrefix(env, "CNI_COMMAND="); n != 1 {
		t.Errorf("delegate's environment has CNI_COMMAND %d times", n)
	}
}

func countPrefix(env []string, prefix string) int {
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, prefix) {
			n++
		}
	}
	return n
}

// TestDelegateFailures: what a failing or missing delegate turns into.
func TestDelegateFailures(t *testing.T) {
	dir := t.TempDir()
	writePlugin(t, dir, "cnierror", `echo '{"cniVersion":"1.0.0","code":7,"msg":"bad range","details":"10.0.0.0/33"}'; exit 1`)
	writePlugin(t, dir, "garbage", `echo 'not json'; exit 1`)
	writePlugin(t, dir, "stderronly", `echo 'it broke' >&2; exit 3`)
	writePlugin(t, dir, "silent", `exit 2`)
	writePlugin(t, dir, "badresult", `echo '{"cniVersion":"1.0.0","ips":'`)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", dir)
	conf := []byte(`{"cniVersion":"1.0.0","name":"n","type":"x"}`)
	tests := []struct {
		plugin   string
		cniErr   bool // a *types.Error
		code     uint
		contains string
	}{
		{"cnierror", true, 7, "bad range"},
		{"garbage", true, 0, `"not json\n" is not a CNI error`},
		{"stderronly", true, 0, `"it broke\n": exit status 3`},
		{"silent", true, 0, "no error message: exit status 2"},
		{"badresult", false, 0, "decoding the delegate's result"},
		{"missing", false, 0, `failed to find plugin "missing" in path [` + dir + `]`},
		{"adir", false, 0, `failed to find plugin "adir"`},
		{"../cnierror", false, 0, "contains a path separator"},
	}
	p := &Plugin{Stderr: &bytes.Buffer{}}
	for _, tt := range tests {
		t.Run(tt.plugin, func(t *testing.T) {
			_, err := p.delegateAdd(context.Background(), tt.plugin, conf)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			var te *types.Error
			if errors.As(err, &te) != tt.cniErr {
				t.Errorf("error %T %v: CNI error %v, want %v", err, err, !tt.cniErr, tt.cniErr)
			}
			if tt.cniErr && te.Code != tt.code {
				t.Errorf("code %d, want %d", te.Code, tt.code)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not say %q", err, tt.contains)
			}
		})
	}
}

// TestGCDelAttachmentParams: the DEL of a stale attachment gets the
// attachment's own container ID and interface name, no netns, and the
// CNI_PATH it was given, whatever the plugin's own environment holds.
func TestGCDelAttachmentParams(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "env")
	writePlugin(t, dir, "recorder", `env > `+record+"\n")
	t.Setenv("CNI_PATH", "/nonexistent")
	t.Setenv("CNI_COMMAND", "GC")
	t.Setenv("CNI_NETNS", "/var/run/netns/stale")
	p := &Plugin{Stderr: &bytes.Buffer{}}
	c := &cached{attachment: attachment{ContainerID: "c9"}, Conf: map[string]any{"type": "recorder", "cniVersion": "1.1.0", "name": "n"}}
	if err := p.delAttachment(context.Background(), c, dir); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(record)
	env := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, want := range []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=c9", "CNI_IFNAME=eth0", "CNI_NETNS=", "CNI_PATH=" + dir} {
		if !slices.Contains(env, want) {
			t.Errorf("delegate's environment lacks %s: %v", want, env)
		}
	}
	if n := countPrefix(env, "CNI_NETNS="); n != 1 {
		t.Errorf("CNI_NETNS %d times in %v", n, env)
	}
}

func TestWithEnv(t *testing.T) {
	got := withEnv([]string{"A=1", "CNI_COMMAND=ADD", "B=x=y", "NOEQ", "CNI_COMMAND=CHECK"}, "CNI_COMMAND=DEL", "C=3")
	want := []string{"A=1", "B=x=y", "NOEQ", "CNI_COMMAND=DEL", "C=3"}
	if !slices.Equal(got, want) {
		t.Errorf("withEnv = %v, want %v", got, want)
	}
}

func TestParseResult(t *testing.T) {
	conf := []byte(`{"cniVersion":"1.0.0"}`)
	for _, tt := range []struct{ out, version string }{
		{`{"cniVersion":"0.4.0","ips":[]}`, "0.4.0"},
		{`{"ips":[]}`, "1.0.0"},
		{`{"cniVersion":"","ips":[]}`, "1.0.0"},
		{`null`, "1.0.0"},
	} {
		r, err := parseResult(conf, []byte(tt.out))
		if err != nil {
			t.Errorf("%s: %v", tt.out, err)
			continue
		}
		if r.Version() != tt.version {
			t.Errorf("%s: version %s, want %s", tt.out, r.Version(), tt.version)
		}
	}
	if _, err := parseResult(conf, []byte(`{"cniVersion":"9.9.9"}`)); err == nil {
		t.Errorf("a result in an unknown version parsed")
	}
}

// TestPluginRunsDelegatesAsProcesses: the zero Plugin (as cmd/flannel
// makes it) runs a real delegate: ADD then DEL of a pod through a recorder
// delegate found in CNI_PATH.
func TestPluginRunsDelegatesAsProcesses(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	writePlugin(t, dir, "recorder", `echo "$CNI_COMMAND $CNI_CONTAINERID" >> `+log+`
cat > /dev/null
[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.244.52.2/24"}]}'
exit 0
`)
	env := filepath.Join(dir, "subnet.env")
	os.WriteFile(env, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	conf := []byte(`{"name":"cbr0","cniVersion":"1.0.0","type":"flannel","subnetFile":"` + env + `","dataDir":"` + filepath.Join(dir, "flannel") +
		`","delegate":{"type":"recorder"}}`)
	// The runtime's parameters are in the plugin's environment, which
	// the delegate inherits.
	t.Setenv("CNI_PATH", dir)
	t.Setenv("CNI_CONTAINERID", "c1")
	var out bytes.Buffer
	p := &Plugin{Stdout: &out, Stderr: &bytes.Buffer{}}
	args := &CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/x", StdinData: conf}
	t.Setenv("CNI_COMMAND", "ADD")
	if err := p.Add(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if !strings.Contains(out.String(), "10.244.52.2/24") {
		t.Errorf("ADD printed %q, want the delegate's result", out.String())
	}
	t.Setenv("CNI_COMMAND", "DEL")
	if err := p.Del(args); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	got, _ := os.ReadFile(log)
	if string(got) != "ADD c1\nDEL c1\n" {
		t.Errorf("delegate ran %q, want ADD then DEL of c1", got)
	}
}
