package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // substring; "" means success
		check   func(t *testing.T, o *options)
	}{
		{name: "defaults", check: func(t *testing.T, o *options) {
			if got := o.endpoints(); len(got) != 2 || got[1] != "http://127.0.0.1:2379" {
				t.Errorf("endpoints = %v", got)
			}
			if o.etcd.Prefix != "/coreos.com/network" || o.node.SubnetFile != "/run/flannel/subnet.env" ||
				o.renewMargin != 60 || o.iptablesResync != 5 || !o.node.ForwardRules || o.node.IPMasq || o.node.HealthzPort != 0 {
				t.Errorf("defaults wrong: %+v", o)
			}
			if o.healthzAddr() != "" {
				t.Errorf("healthz enabled by default")
			}
		}},
		{name: "flags", args: []string{"-etcd-endpoints=http://10.0.0.1:2379", "-iface", "eth0", "-iface", "10.1.1.1,eth1",
			"--ip-masq", "-healthz-port=8471", "-subnet-lease-ttl=30s"}, check: func(t *testing.T, o *options) {
			if strings.Join(o.node.Ifaces, " ") != "eth0 10.1.1.1 eth1" {
				t.Errorf("ifaces = %v", o.node.Ifaces)
			}
			if !o.node.IPMasq || o.healthzAddr() != "0.0.0.0:8471" || o.leaseTTL != 30*time.Second {
				t.Errorf("got %+v", o)
			}
		}},
		{name: "env", env: map[string]string{"FLANNELD_ETCD_PREFIX": "/weft/net", "FLANNELD_IP_MASQ": "true", "FLANNELD_IFACE": "eth9"},
			check: func(t *testing.T, o *options) {
				if o.etcd.Prefix != "/weft/net" || !o.node.IPMasq || o.node.Ifaces.String() != "eth9" {
					t.Errorf("got %+v", o)
				}
			}},
		{name: "flag beats env", args: []string{"-etcd-prefix=/a"}, env: map[string]string{"FLANNELD_ETCD_PREFIX": "/b"},
			check: func(t *testing.T, o *options) {
				if o.etcd.Prefix != "/a" {
					t.Errorf("prefix = %q", o.etcd.Prefix)
				}
			}},
		{name: "unknown flag", args: []string{"-no-such-flag"}, wantErr: "not defined: -no-such-flag"},
		{name: "bad bool in env", env: map[string]string{"FLANNELD_IP_MASQ": "maybe"}, wantErr: `FLANNELD_IP_MASQ="maybe"`},
		{name: "kube defaults", args: []string{"-kube-subnet-mgr"}, check: func(t *testing.T, o *options) {
			if !o.kube.Enabled || o.kube.NetConfPath != "/etc/kube-flannel/net-conf.json" || !o.setNodeNetUnavail ||
				o.kube.AnnotationPrefix != "flannel.alpha.coreos.com" || o.kube.APIURL != "" || o.kube.Kubeconfig != "" || len(o.etcdGiven) != 0 {
				t.Errorf("got %+v", o)
			}
		}},
		{name: "kube from env, etcd flags noted", args: []string{"-etcd-prefix=/x"},
			env: map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true", "FLANNELD_KUBECONFIG_FILE": "/k", "FLANNELD_ETCD_ENDPOINTS": "http://e:2379",
				"FLANNELD_SET_NODE_NETWORK_UNAVAILABLE": "false", "FLANNELD_KUBE_ANNOTATION_PREFIX": "example.com/net"},
			check: func(t *testing.T, o *options) {
				if !o.kube.Enabled || o.kube.Kubeconfig != "/k" || o.setNodeNetUnavail || o.kube.AnnotationPrefix != "example.com/net" ||
					strings.Join(o.etcdGiven, " ") != "-etcd-endpoints -etcd-prefix" {
					t.Errorf("got %+v", o)
				}
			}},
		{name: "kube bad prefix", args: []string{"-kube-subnet-mgr", "-kube-annotation-prefix=a/b/c"}, wantErr: "at most one"},
		{name: "kube, flanneld's manifest env", args: []string{"-kube-subnet-mgr"},
			env: map[string]string{"EVENT_QUEUE_DEPTH": "5000", "CONT_WHEN_CACHE_NOT_READY": "false"}, check: func(t *testing.T, o *options) {}},
		{name: "kube, bad EVENT_QUEUE_DEPTH", args: []string{"-kube-subnet-mgr"}, env: map[string]string{"EVENT_QUEUE_DEPTH": "lots"}, wantErr: `EVENT_QUEUE_DEPTH="lots"`},
		{name: "kube, negative EVENT_QUEUE_DEPTH", args: []string{"-kube-subnet-mgr"}, env: map[string]string{"EVENT_QUEUE_DEPTH": "-1"}, wantErr: `EVENT_QUEUE_DEPTH="-1"`},
		{name: "kube, bad CONT_WHEN_CACHE_NOT_READY", args: []string{"-kube-subnet-mgr"}, env: map[string]string{"CONT_WHEN_CACHE_NOT_READY": "maybe"}, wantErr: `CONT_WHEN_CACHE_NOT_READY="maybe"`},
		{name: "etcd mode ignores the kube env", env: map[string]string{"EVENT_QUEUE_DEPTH": "lots"}, check: func(t *testing.T, o *options) {}},
		{name: "etcd flags unchecked in kube mode", args: []string{"-kube-subnet-mgr", "-etcd-endpoints=nonsense"}, check: func(t *testing.T, o *options) {}},
		{name: "bad public ip", args: []string{"-public-ip=10.1.1"}, wantErr: `-public-ip "10.1.1"`},
		{name: "bad endpoint", args: []string{"-etcd-endpoints=localhost:2379"}, wantErr: "not a URL"},
		{name: "bad port", args: []string{"-healthz-port=70000"}, wantErr: "not a port"},
		{name: "cert without key", args: []string{"-etcd-certfile=/x"}, wantErr: "go together"},
		{name: "bad level", args: []string{"-log-level=loud"}, wantErr: `"loud"`},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errUsage) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

// run exits with 2 and a message naming the problem on bad flags, without
// touching etcd or the network.
func TestRunUsageExitCode(t *testing.T) {
	for _, args := range [][]string{{"-bogus"}, {"-kube-subnet-mgr", "-kube-annotation-prefix", "A/B/C"}, {"-public-ip", "nope"}, {"stray"}} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
	if code := run([]string{"-version"}); code != 0 {
		t.Errorf("run(-version) = %d, want 0", code)
	}
}

// TestSteadyProcs checks that weftd asks the agent for one P once ready,
// unless GOMAXPROCS in the environment chose the number itself.
func TestSteadyProcs(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{env: nil, want: 1},
		{env: map[string]string{"GOMAXPROCS": "4"}, want: 0},
		{env: map[string]string{"GOGC": "50"}, want: 1},
	} {
		if got := steadyProcs(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("environment %v: steadyProcs %d, want %d", tc.env, got, tc.want)
		}
	}
}
