package cniplugin

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDispatch runs the plugin's entry point on calls that fail or succeed
// before a delegate runs (or with a recorder as the delegate), and checks
// the exit status, the CNI error printed on stdout and what the verb got.
func TestDispatch(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	os.WriteFile(env, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	log := filepath.Join(dir, "log")
	writePlugin(t, dir, "recorder", `echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> `+log+`
cat > /dev/null
[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.244.52.2/24"}]}'
exit 0
`)
	conf := func(v string) string {
		return `{"name":"cbr0","cniVersion":"` + v + `","type":"flannel","subnetFile":"` + env + `","dataDir":"` + filepath.Join(dir, "flannel") +
			`","delegate":{"type":"recorder"}}`
	}
	base := map[string]string{"CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": dir}
	tests := []struct {
		name   string
		env    map[string]string // over base; "" deletes
		stdin  string
		code   uint // 0: success
		says   string
		stdout string // success: a substring of stdout
		stderr string
	}{
		{name: "no command prints what it is", env: map[string]string{"CNI_COMMAND": ""}, stderr: "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"},
		{name: "VERSION", env: map[string]string{"CNI_COMMAND": "VERSION"}, stdin: "not read", stdout: `"supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]`},
		{name: "unknown command", env: map[string]string{"CNI_COMMAND": "FROB"}, code: types.ErrInvalidEnvironmentVariables, says: `unknown CNI_COMMAND "FROB"`},
		{name: "ADD without netns and path", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_NETNS": "", "CNI_PATH": ""}, stdin: conf("1.0.0"),
			code: types.ErrInvalidEnvironmentVariables, says: "ADD needs CNI_NETNS, CNI_PATH"},
		{name: "DEL needs no netns", env: map[string]string{"CNI_COMMAND": "DEL", "CNI_NETNS": ""}, stdin: conf("1.0.0")},
		{name: "bad container ID", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "-c1"}, stdin: conf("1.0.0"),
			code: types.ErrInvalidEnvironmentVariables, says: `CNI_CONTAINERID "-c1"`},
		{name: "container ID with a slash", env: map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "../etc"}, stdin: conf("1.0.0"),
			code: types.ErrInvalidEnvironmentVariables, says: `CNI_CONTAINERID "../etc"`},
		{name: "STATUS ignores a stale container ID", env: map[string]string{"CNI_COMMAND": "STATUS", "CNI_CONTAINERID": "bad id"}, stdin: conf("1.1.0")},
		{name: "interface name too long", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": "abcdefghijklmnop"}, stdin: conf("1.0.0"),
			code: types.ErrInvalidEnvironmentVariables, says: "longer than 15 bytes"},
		{name: "interface name with a colon", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0:1"}, stdin: conf("1.0.0"),
			code: types.ErrInvalidEnvironmentVariables, says: "contains '/', ':' or white space"},
		{name: "bad JSON", env: map[string]string{"CNI_COMMAND": "ADD"}, stdin: `{"name":`, code: types.ErrDecodingFailure, says: "decoding the network config on stdin"},
		{name: "no name", env: map[string]string{"CNI_COMMAND": "ADD"}, stdin: `{"cniVersion":"1.0.0","type":"flannel"}`, code: types.ErrInvalidNetworkConfig, says: `has no "name"`},
		{name: "bad name", env: map[string]string{"CNI_COMMAND": "ADD"}, stdin: `{"cniVersion":"1.0.0","name":"a b"}`, code: types.ErrInvalidNetworkConfig, says: `the network name "a b"`},
		{name: "unknown version", env: map[string]string{"CNI_COMMAND": "ADD"}, stdin: conf("9.9.9"), code: types.ErrIncompatibleCNIVersion, says: "9.9.9 is not one the plugin speaks"},
		{name: "CHECK with a 0.3.1 config", env: map[string]string{"CNI_COMMAND": "CHECK"}, stdin: conf("0.3.1"), code: types.ErrIncompatibleCNIVersion, says: "CHECK needs a config of CNI version 0.4.0 or later"},
		{name: "GC with a 1.0.0 config", env: map[string]string{"CNI_COMMAND": "GC"}, stdin: conf("1.0.0"), code: types.ErrIncompatibleCNIVersion, says: "GC needs a config of CNI version 1.1.0"},
		{name: "STATUS with a 1.0.0 config", env: map[string]string{"CNI_COMMAND": "STATUS"}, stdin: conf("1.0.0"), code: types.ErrIncompatibleCNIVersion, says: "STATUS needs a config of CNI version 1.1.0"},
		{name: "ADD", env: map[string]string{"CNI_COMMAND": "ADD"}, stdin: conf("1.0.0"), stdout: "10.244.52.2/24"},
		{name: "ADD into the plugin's own netns", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c2", "CNI_NETNS": "/proc/self/ns/net"}, stdin: conf("1.0.0"),
			code: types.ErrInvalidNetNS, says: "is the plugin's own network namespace"},
		{name: "own netns allowed by CNI_NETNS_OVERRIDE", env: map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c3", "CNI_NETNS": "/proc/self/ns/net", "CNI_NETNS_OVERRIDE": "true"}, stdin: conf("1.0.0"), stdout: "10.244.52.2/24"},
		{name: "STATUS without subnet.env", env: map[string]string{"CNI_COMMAND": "STATUS"}, stdin: `{"name":"cbr0","cniVersion":"1.1.0","subnetFile":"` + filepath.Join(dir, "none") + `"}`,
			code: types.ErrPluginNotAvailable, says: "cannot add pods yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range base {
				vars[k] = v
			}
			for k, v := range tt.env {
				vars[k] = v
			}
			// The delegate inherits the plugin's environment.
			for k, v := range vars {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			p := &Plugin{}
			status := p.Run(func(k string) string { return vars[k] }, strings.NewReader(tt.stdin), &stdout, &stderr)
			if tt.code == 0 {
				if status != 0 {
					t.Fatalf("exit %d; stdout %q stderr %q", status, stdout.String(), stderr.String())
				}
				if !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
					t.Errorf("stdout %q stderr %q; want %q and %q in them", stdout.String(), stderr.String(), tt.stdout, tt.stderr)
				}
				return
			}
			if status != 1 {
				t.Errorf("exit %d, want 1", status)
			}
			var e types.Error
			if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
				t.Fatalf("stdout %q is not a CNI error: %v", stdout.String(), err)
			}
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.says) {
				t.Errorf("error %d %q, want %d saying %q", e.Code, e.Msg, tt.code, tt.says)
			}
		})
	}
	got, _ := os.ReadFile(log)
	if want := "DEL c1 eth0\nSTATUS bad id eth0\nADD c1 eth0\nADD c3 eth0\n"; string(got) != want {
		t.Errorf("the delegate ran\n%s\nwant\n%s", got, want)
	}
}
