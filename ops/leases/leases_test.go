package leases

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/test/etcdtest"
)

const prefix = "/coreos.com/network"

const goodValue = `{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`

// seed writes a config and a mix of good, bad and reserved leases.
func seed(t *testing.T, c *clientv3.Client) {
	t.Helper()
	ctx := context.Background()
	put := func(k, v string, opts ...clientv3.OpOption) {
		if _, err := c.Put(ctx, prefix+k, v, opts...); err != nil {
			t.Fatal(err)
		}
	}
	put("/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	g, err := c.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	put("/subnets/10.244.3.0-24", goodValue, clientv3.WithLease(g.ID))
	put("/subnets/10.244.20.0-24", `{"PublicIP":"192.0.2.20","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`)
	put("/subnets/10.244.4.0-24", `{"PublicIP":"192.0.2.11","BackendType":"host-gw"}`, clientv3.WithLease(g.ID))
	put("/subnets/10.99.0.0-24", goodValue, clientv3.WithLease(g.ID))
	put("/subnets/garbage", `not json`)
	put("/subnets/10.244.5.0-24", `{"PublicIP":`)
}

// store returns the lease store over c as Open sets it up.
func store(t *testing.T, c *clientv3.Client) *etcd.Store {
	t.Helper()
	s, err := Open(etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestList(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	seed(t, c)
	rep, err := List(context.Background(), store(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Network != "10.244.0.0/16" || rep.BackendType != "vxlan" || rep.ConfigError != "" {
		t.Errorf("config: network %q backend %q error %q", rep.Network, rep.BackendType, rep.ConfigError)
	}
	byKey := map[string]Row{}
	var order []string
	for _, r := range rep.Leases {
		byKey[r.Key] = r
		order = append(order, r.Key)
	}
	wantOrder := "10.99.0.0-24 10.244.3.0-24 10.244.4.0-24 10.244.5.0-24 10.244.20.0-24 garbage"
	if got := strings.Join(order, " "); got != wantOrder {
		t.Errorf("order %q, want %q", got, wantOrder)
	}
	for _, tc := range []struct {
		key, invalid string
		reservation  bool
		mac          string
	}{
		{"10.244.3.0-24", "", false, "c6:d2:32:6f:8f:44"},
		{"10.244.20.0-24", "", true, "c6:d2:32:6f:8f:45"},
		{"10.244.4.0-24", "BackendType \"host-gw\"", false, ""},
		{"10.99.0.0-24", "not a /24 inside network", false, "c6:d2:32:6f:8f:44"},
		{"garbage", "no \"-<len>\" suffix", true, ""},
		{"10.244.5.0-24", "value", true, ""},
	} {
		t.Run(tc.key, func(t *testing.T) {
			r, ok := byKey[tc.key]
			if !ok {
				t.Fatalf("missing row")
			}
			if (tc.invalid == "") != (r.Invalid == "") || !strings.Contains(r.Invalid, tc.invalid) {
				t.Errorf("invalid %q, want containing %q", r.Invalid, tc.invalid)
			}
			if r.Reservation != tc.reservation {
				t.Errorf("reservation %v, want %v", r.Reservation, tc.reservation)
			}
			if r.VtepMAC != tc.mac {
				t.Errorf("VtepMAC %q, want %q", r.VtepMAC, tc.mac)
			}
			if !tc.reservation && (r.ExpiresInSeconds == nil || *r.ExpiresInSeconds <= 3500) {
				t.Errorf("expires in %v, want about 3600", r.ExpiresInSeconds)
			}
		})
	}

	var table bytes.Buffer
	if err := RenderTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"network 10.244.0.0/16, backend vxlan, 6 leases",
		"SUBNET", "ENGINE", "VTEP MAC / PUBLIC KEY", "EXPIRES IN",
		"10.244.3.0/24   192.0.2.10  vxlan    kernel  c6:d2:32:6f:8f:44      59m", // the TTL, just granted
		"reservation", "INVALID: key \"10.244.4.0-24\"",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := RenderJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Leases) != 6 {
		t.Errorf("JSON round trip: %v, %d leases\n%s", err, len(back.Leases), js.String())
	}
}

// TestListWireGuard: the engine and public key of wireguard leases, from
// Weft's lease data and from flanneld's (no engine: the kernel's).
func TestListWireGuard(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	for k, v := range map[string]string{
		"/config":                `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`,
		"/subnets/10.244.3.0-24": `{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=","Port":51820,"Engine":"userspace"}}`,
		"/subnets/10.244.4.0-24": `{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"3c0pKqqrMSp6PVBS8hDlQD2bGfhUsUiRqRzS4ua/2nY=","Port":51820}}`,
		"/subnets/10.244.5.0-24": `{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"bad","Port":51820}}`,
	} {
		if _, err := c.Put(ctx, prefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := List(ctx, store(t, c))
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := RenderTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"10.244.3.0/24  192.0.2.10  wireguard  userspace  CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=",
		"10.244.4.0/24  192.0.2.11  wireguard  kernel     3c0pKqqrMSp6PVBS8hDlQD2bGfhUsUiRqRzS4ua/2nY=",
		`INVALID: key "10.244.5.0-24": BackendData`, `PublicKey "bad" is not a base64-encoded 32-byte key`,
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if r := rep.Leases[0]; r.Engine != "userspace" || r.PublicKey != "CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc=" {
		t.Errorf("row %+v", r)
	}
}

func TestListNoConfig(t *testing.T) {
	srv := etcdtest.Start(t)
	rep, err := List(context.Background(), store(t, srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.ConfigError, "no network config") || len(rep.Leases) != 0 {
		t.Errorf("report %+v", rep)
	}
	var table bytes.Buffer
	RenderTable(&table, rep)
	if !strings.Contains(table.String(), "no network config") {
		t.Errorf("table:\n%s", table.String())
	}
}

func TestParseSubnet(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"10.244.5.0/24", "10.244.5.0/24"},
		{"10.244.5.0-24", "10.244.5.0/24"},
		{"10.244.5.1/24", ""},
		{"fd00::/64", ""},
		{"nonsense", ""},
		{"10.244.5.0-24&fd00::-64", ""},
	} {
		got, err := ParseSubnet(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseSubnet(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseSubnet(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
