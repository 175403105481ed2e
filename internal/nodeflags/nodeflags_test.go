package nodeflags

import (
	"flag"
	"io"
	"testing"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		bad     bool
		healthz string
		url     string
	}{
		{args: nil},
		{args: []string{"-healthz-port", "8471"}, healthz: "0.0.0.0:8471", url: "http://127.0.0.1:8471"},
		{args: []string{"-healthz-ip", "10.0.0.2", "-healthz-port", "8471"}, healthz: "10.0.0.2:8471", url: "http://10.0.0.2:8471"},
		{args: []string{"-public-ip", "fd00::1"}, bad: true},
		{args: []string{"-public-ipv6", "2001:db8::5"}},
		{args: []string{"-public-ipv6", "192.0.2.5"}, bad: true},
		{args: []string{"-public-ipv6", "fe80::5"}, bad: true},
		{args: []string{"-healthz-port", "70000"}, bad: true},
		{args: []string{"-healthz-ip", "nope"}, bad: true},
	} {
		var f Flags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := f.Check()
		if (err != nil) != tc.bad {
			t.Errorf("%q: Check() = %v, want error %t", tc.args, err, tc.bad)
			continue
		}
		if err == nil && (f.HealthzAddr() != tc.healthz || f.HealthzURL() != tc.url) {
			t.Errorf("%q: HealthzAddr %q, HealthzURL %q; want %q, %q", tc.args, f.HealthzAddr(), f.HealthzURL(), tc.healthz, tc.url)
		}
	}
	var f Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f.Register(fs)
	fs.VisitAll(func(fl *flag.Flag) {
		if !IsNodeFlag(fl.Name) {
			t.Errorf("IsNodeFlag(%q) = false for a flag Register defines", fl.Name)
		}
	})
	if IsNodeFlag("etcd-endpoints") {
		t.Error("IsNodeFlag(etcd-endpoints) = true")
	}
}
