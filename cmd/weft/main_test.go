package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/etcdtest"
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
