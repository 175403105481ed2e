package etcdflags

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		f       Flags
		wantErr string
	}{
		{"defaults", Flags{Endpoints: DefaultEndpoints, Prefix: DefaultPrefix}, ""},
		{"empty endpoints", Flags{Endpoints: " , ", Prefix: DefaultPrefix}, "-etcd-endpoints is empty"},
		{"no scheme", Flags{Endpoints: "10.0.0.1:2379", Prefix: DefaultPrefix}, `"10.0.0.1:2379" is not a URL`},
		{"relative prefix", Flags{Endpoints: DefaultEndpoints, Prefix: "coreos.com"}, "must start with /"},
		{"cert without key", Flags{Endpoints: DefaultEndpoints, Prefix: DefaultPrefix, CertFile: "c.pem"}, "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	other := fs.Bool("ip-masq", false, "")
	if err := fs.Parse([]string{"-etcd-prefix=/cli"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"FLANNELD_ETCD_ENDPOINTS": "https://10.0.0.1:2379,https://10.0.0.2:2379",
		"FLANNELD_ETCD_PREFIX":    "/env",
		"FLANNELD_IP_MASQ":        "true",
	}
	if err := FromEnv(fs, func(k string) string { return env[k] }, IsEtcdFlag); err != nil {
		t.Fatal(err)
	}
	if f.Prefix != "/cli" {
		t.Errorf("the command line lost to the environment: prefix %q", f.Prefix)
	}
	if got := f.EndpointList(); len(got) != 2 || got[1] != "https://10.0.0.2:2379" {
		t.Errorf("endpoints %v", got)
	}
	if *other {
		t.Errorf("a flag outside keep was taken from the environment")
	}
	if EnvName("etcd-cafile") != "FLANNELD_ETCD_CAFILE" {
		t.Errorf("EnvName = %q", EnvName("etcd-cafile"))
	}
	bad := map[string]string{"FLANNELD_IP_MASQ": "maybe"}
	if err := FromEnv(fs, func(k string) string { return bad[k] }, nil); err == nil || !strings.Contains(err.Error(), `FLANNELD_IP_MASQ="maybe"`) {
		t.Errorf("bad value: err = %v", err)
	}
}
