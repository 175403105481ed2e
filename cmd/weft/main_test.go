package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/etcdtest"
	"github.com/weftnet/weft/test/kubetest"
)

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     string
		json    bool
		prefix  string
		wantErr bool
	}{
		{[]string{"--json"}, "", true, "/p", false},
		{[]string{"reserve", "10.244.5.0/24", "--etcd-prefix", "/x", "198.18.0.2"}, "reserve 10.244.5.0/24 198.18.0.2", false, "/x", false},
		{[]string{"-json", "release", "10.244.5.0/24", "--json=false"}, "release 10.244.5.0/24", false, "/p", false},
		{[]string{"--nope"}, "", false, "/p", true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(&bytes.Buffer{})
			j := fs.Bool("json", false, "")
			p := fs.String("etcd-prefix", "/p", "")
			pos, err := parseInterleaved(fs, tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				if !errors.Is(err, errUsage) {
					t.Errorf("err = %v, want errUsage", err)
				}
				return
			}
			if strings.Join(pos, " ") != tc.pos || *j != tc.json || *p != tc.prefix {
				t.Errorf("pos %q json %v prefix %q; want %q %v %q", pos, *j, *p, tc.pos, tc.json, tc.prefix)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"lab"},
		{"lab", "sideways"},
		{"lab", "up", "extra"},
		{"lab", "up", "--network", "banana"},
		{"leases", "reserve", "10.244.5.0/24"},
		{"leases", "reserve", "10.244.5.1/24", "198.18.0.2"},
		{"leases", "frobnicate"},
		{"leases", "--kube-subnet-mgr", "reserve", "10.244.5.0/24", "198.18.0.2"},
		{"leases", "--kube-subnet-mgr", "--kube-annotation-prefix", "A/B/C"},
		{"doctor", "--kube-subnet-mgr", "--kube-annotation-prefix", "A/B/C"},
		{"doctor", "--kube-subnet-mgr", "--net-config-path", ""},
		{"node", "teardown", "--kube-subnet-mgr", "--kube-annotation-prefix", "A/B/C"},
		{"node", "teardown", "--kube-subnet-mgr", "--public-ip", "192.0.2.1"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, &out, &errOut)
			if !errors.Is(err, errUsage) {
				t.Errorf("run(%q) = %v, want a usage error", args, err)
			}
		})
	}
}

// TestKubeFlagsFromEnv: the doctor and teardown take the Kubernetes-mode
// flags from FLANNELD_* as weftd does (the bad prefix is refused only when
// it was read).
func TestKubeFlagsFromEnv(t *testing.T) {
	t.Setenv("FLANNELD_KUBE_SUBNET_MGR", "true")
	t.Setenv("FLANNELD_KUBE_ANNOTATION_PREFIX", "A/B/C")
	for _, args := range [][]string{{"doctor"}, {"node", "teardown"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "A/B/C") {
			t.Errorf("run(%q) = %v, want a usage error naming the prefix", args, err)
		}
	}
}

func TestLeasesCommand(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx := context.Background()
	if _, err := srv.Client().Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`); err != nil {
		t.Fatal(err)
	}
	ep := "--etcd-endpoints=" + srv.ClientURL
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"leases", "reserve", "10.244.7.0/24", "198.18.0.7", ep}, "reserved for 198.18.0.7"},
		{[]string{"leases", ep}, "10.244.7.0/24  198.18.0.7  vxlan"},
		{[]string{"leases", "--json", ep}, `"reservation": true`},
		{[]string{"leases", "release", "10.244.7.0-24", ep}, "released"},
		{[]string{"leases", ep}, "0 leases"},
	}
	for _, s := range steps {
		var out, errOut bytes.Buffer
		if err := run(ctx, s.args, &out, &errOut); err != nil {
			t.Fatalf("weft %s: %v\n%s", strings.Join(s.args, " "), err, errOut.String())
		}
		if !strings.Contains(out.String(), s.want) {
			t.Errorf("weft %s: output lacks %q:\n%s", strings.Join(s.args, " "), s.want, out.String())
		}
	}
}

// TestLeasesCommandKube runs `weft leases -kube-subnet-mgr` against a real
// apiserver.
func TestLeasesCommandKube(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	p := "flannel.alpha.coreos.com/"
	c.CreateNode(t, "node-1", kubetest.NodeOptions{PodCIDR: "10.244.9.0/24", Annotations: map[string]string{
		p + "kube-subnet-manager": "true", p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "192.0.2.9"}})
	netConf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"leases", "--kube-subnet-mgr", "--kubeconfig-file", c.Kubeconfig, "--net-config-path", netConf}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	for _, want := range []string{"network 10.244.0.0/16, backend host-gw, 1 flannel Nodes", "node-1  10.244.9.0/24  192.0.2.9  host-gw", "with its Node  ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
