package leases

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/test/kubetest"
)

// TestListKube lists the leases of a Kubernetes-mode cluster from a real
// apiserver: flannel Nodes only, validated against net-conf.json.
func TestListKube(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{NoControllerManager: true})
	p := "flannel.alpha.coreos.com/"
	ann := func(ip, mac string) map[string]string {
		return map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`, p + "public-ip": ip}
	}
	c.CreateNode(t, "b-good", kubetest.NodeOptions{PodCIDR: "10.244.2.0/24", Annotations: ann("192.0.2.2", "5a:1f:00:00:00:02")})
	c.CreateNode(t, "a-badmac", kubetest.NodeOptions{PodCIDR: "10.244.1.0/24", Annotations: ann("192.0.2.1", "zz")})
	c.CreateNode(t, "plain", kubetest.NodeOptions{PodCIDR: "10.244.3.0/24"})
	api, err := kube.NewAPI(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	cfg, _, _, err := subnet.ParseKubeConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ListKube(context.Background(), api, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Kube || rep.OtherNodes != 1 || len(rep.Leases) != 2 || rep.Network != "10.244.0.0/16" {
		t.Fatalf("report %+v", rep)
	}
	bad, good := rep.Leases[0], rep.Leases[1]
	if good.Node != "b-good" || good.Subnet != "10.244.2.0/24" || good.PublicIP != "192.0.2.2" || good.VtepMAC != "5a:1f:00:00:00:02" || good.Invalid != "" {
		t.Errorf("good row %+v", good)
	}
	if bad.Node != "a-badmac" || !strings.Contains(bad.Invalid, "VtepMAC") {
		t.Errorf("bad row %+v", bad)
	}
	var out bytes.Buffer
	if err := RenderTable(&out, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"network 10.244.0.0/16, backend vxlan, 2 flannel Nodes (annotations flannel.alpha.coreos.com/), 1 other Nodes",
		"NODE", "b-good", "with its Node", "INVALID: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := RenderJSON(&out, rep); err != nil || !json.Valid(out.Bytes()) {
		t.Errorf("JSON %v:\n%s", err, out.String())
	}
	// Without net-conf.json: rows, no verdict.
	rep, err = ListKube(context.Background(), api, a, nil)
	if err != nil || rep.ConfigError == "" || rep.Leases[0].Invalid != "" {
		t.Errorf("without config: %+v, %v", rep, err)
	}
}
