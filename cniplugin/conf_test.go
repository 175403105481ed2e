package cniplugin

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/subnet/subnetenv"
)

func TestDelegateConf(t *testing.T) {
	v4 := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	dual := v4 + "FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:34::1/64\n"
	tests := []struct {
		name, env, conf, want string
	}{{
		name: "stock",
		env:  v4,
		conf: `{"name":"cbr0","cniVersion":"1.0.0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		want: `{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.52.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`,
	}, {
		name: "no delegate, agent does not masquerade",
		env:  strings.Replace(v4, "IPMASQ=true", "IPMASQ=false", 1),
		conf: `{"name":"n","cniVersion":"0.3.1","type":"flannel"}`,
		want: `{"cniVersion":"0.3.1","ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.244.52.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"n","type":"bridge"}`,
	}, {
		name: "dual stack",
		env:  dual,
		conf: `{"name":"n","cniVersion":"1.1.0","type":"flannel"}`,
		want: `{"cniVersion":"1.1.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.52.0/24"}],[{"subnet":"fd00:0:0:34::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00::/56"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"n","type":"bridge"}`,
	}, {
		// flannel's own delegate for kube-flannel.yml's conflist on a
		// dual-stack node, byte for byte: flannel CNI plugin
		// v1.9.1-flannel1, cni-plugin/flannel_linux.go doCmdAdd and
		// getDelegateIPAM (its flannel_linux_test.go "dual stack" case).
		name: "flannel's dual-stack delegate",
		env:  "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		conf: `{"name":"cbr0","cniVersion":"0.3.1","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		want: `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}],[{"subnet":"2001:cafe:42:1::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"2001:cafe:42::/56"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`,
	}, {
		name: "delegate overrides, other type, ipam base, runtimeConfig",
		env:  v4,
		conf: `{"name":"n","cniVersion":"1.0.0","type":"flannel","delegate":{"type":"ptp","mtu":1400,"ipMasq":true},"ipam":{"dataDir":"/x","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.244.0.0/16"}]},"runtimeConfig":{"portMappings":[]}}`,
		want: `{"cniVersion":"1.0.0","ipMasq":true,"ipam":{"dataDir":"/x","ranges":[[{"subnet":"10.244.52.0/24"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"10.244.0.0/16"}],"type":"host-local"},"mtu":1400,"name":"n","runtimeConfig":{"portMappings":[]},"type":"ptp"}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := subnetenv.Parse([]byte(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			n, err := ParseNetConf([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(DelegateConf(n, env))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("delegate config\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseNetConfErrors(t *testing.T) {
	tests := []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"bad json", `{"name":`, types.ErrDecodingFailure, "decoding the flannel network configuration"},
		{"delegate name", `{"name":"n","delegate":{"name":"x"}}`, types.ErrInvalidNetworkConfig, `must not have a "name" field`},
		{"delegate ipam", `{"name":"n","delegate":{"ipam":{}}}`, types.ErrInvalidNetworkConfig, `must not have a "ipam" field`},
		{"delegate type", `{"name":"n","delegate":{"type":3}}`, types.ErrInvalidNetworkConfig, `delegate "type" must be a plugin name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseNetConf([]byte(tt.conf))
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tt.code || !strings.Contains(te.Msg, tt.msg) {
				t.Fatalf("ParseNetConf(%s) = %v, want code %d containing %q", tt.conf, err, tt.code, tt.msg)
			}
		})
	}
}

func TestParseNetConfDefaults(t *testing.T) {
	n, err := ParseNetConf([]byte(`{"name":"n"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/run/flannel/subnet.env" || n.DataDir != "/var/lib/cni/flannel" {
		t.Errorf("defaults: subnetFile %q dataDir %q", n.SubnetFile, n.DataDir)
	}
}

func TestCacheRoundTripAndFlannelCompat(t *testing.T) {
	dir := t.TempDir()
	conf := map[string]any{"type": "bridge", "name": "cbr0", "mtu": float64(1450)}
	if err := writeCache(dir, attachment{ContainerID: "c1", IfName: "net1"}, conf); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache mode %v, want 0600", fi.Mode().Perm())
	}
	c, err := readCache(dir, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if c.IfName != "net1" || c.ContainerID != "c1" || len(c.Conf) != 3 || c.Conf["type"] != "bridge" {
		t.Errorf("read back %+v", c)
	}

	// A cache file as flannel's plugin writes it: the bare delegate config.
	flannel := `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.52.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`
	if err := os.WriteFile(filepath.Join(dir, "c2"), []byte(flannel), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = readCache(dir, "c2")
	if err != nil {
		t.Fatal(err)
	}
	if c.IfName != "" || c.Conf["type"] != "bridge" {
		t.Errorf("flannel cache read as %+v", c)
	}

	for name, content := range map[string]string{"c3": `{"type":`, "c4": `{"name":"x"}`} {
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
		if _, err := readCache(dir, name); !errors.Is(err, errCorrupt) {
			t.Errorf("readCache(%s = %s) = %v, want corrupt", name, content, err)
		}
	}
	os.WriteFile(filepath.Join(dir, ".c5.tmp-1"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	ids, err := cachedIDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "c1,c2,c3,c4" {
		t.Errorf("cachedIDs = %v", ids)
	}
}
