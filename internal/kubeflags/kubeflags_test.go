package kubeflags

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: nil},
		{args: []string{"-kube-subnet-mgr"}},
		{args: []string{"-kube-annotation-prefix", "A/B/C"}}, // unused without -kube-subnet-mgr
		{args: []string{"-kube-subnet-mgr", "-kube-annotation-prefix", "A/B/C"}, wantErr: "at most one"},
		{args: []string{"-kube-subnet-mgr", "-net-config-path", ""}, wantErr: "-net-config-path is empty"},
	} {
		var f Flags
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := f.Check()
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q: Check() = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	n := 0
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	new(Flags).Register(fs)
	fs.VisitAll(func(fl *flag.Flag) {
		n++
		if !IsKubeFlag(fl.Name) {
			t.Errorf("IsKubeFlag(%q) = false", fl.Name)
		}
	})
	if n != 5 || IsKubeFlag("etcd-endpoints") {
		t.Errorf("%d flags; IsKubeFlag(etcd-endpoints) = %v", n, IsKubeFlag("etcd-endpoints"))
	}
	var f Flags
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	f.Register(fs)
	if a := f.Annotations(); a.SubnetManager != "flannel.alpha.coreos.com/kube-subnet-manager" {
		t.Errorf("default annotations %+v", a)
	}
	f.Kubeconfig = "/nonexistent/kubeconfig"
	if _, _, err := f.API("test"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("API with a missing kubeconfig: %v", err)
	}
}
