package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/weftnet/weft/backend/registry"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
)

// ListKube reads the leases of a Kubernetes-mode cluster: one row per Node
// marked as a flannel node, its podCIDR as the subnet. When cfg (the
// cluster's net-conf.json) is nil the rows are not validated.
func ListKube(ctx context.Context, api kube.API, ann kube.Annotations, cfg *subnet.Config) (*Report, error) {
	nls, others, err := kube.ListLeases(ctx, api, ann, cfg, registry.ValidateData)
	if err != nil {
		return nil, err
	}
	rep := &Report{Prefix: strings.TrimSuffix(ann.Prefix, "/"), Kube: true, OtherNodes: others, Leases: []Row{}}
	if cfg != nil {
		rep.Network, rep.BackendType = cfg.Network.String(), cfg.BackendType
	} else {
		rep.ConfigError = "no net-conf.json given (-net-config-path): leases are not validated"
	}
	for _, nl := range nls {
		l := nl.Lease
		row := Row{Key: "node/" + nl.Node, Node: nl.Node, Backend: l.Attrs.BackendType, Invalid: nl.Invalid}
		if l.Subnet.IsValid() {
			row.Subnet = l.Subnet.String()
		}
		if l.IPv6Subnet.IsValid() {
			row.IPv6Subnet = l.IPv6Subnet.String()
		}
		if l.Attrs.PublicIP.IsValid() {
			row.PublicIP = l.Attrs.PublicIP.String()
		}
		var bd struct {
			VtepMAC string `json:"VtepMAC"`
		}
		if len(l.Attrs.BackendData) > 0 && json.Unmarshal(l.Attrs.BackendData, &bd) == nil {
			row.VtepMAC = bd.VtepMAC
		}
		v, err := l.Attrs.Marshal()
		if err != nil {
			v = []byte("null")
		}
		row.Value = v
		rep.Leases = append(rep.Leases, row)
	}
	sort.SliceStable(rep.Leases, func(i, j int) bool { return lessRow(rep.Leases[i], rep.Leases[j]) })
	return rep, nil
}

// kubeHeader is the table's first line in Kubernetes mode.
func kubeHeader(rep *Report) string {
	net := "network unknown"
	if rep.ConfigError == "" {
		net = fmt.Sprintf("network %s, backend %s", rep.Network, rep.BackendType)
	}
	return fmt.Sprintf("%s, %d flannel Nodes (annotations %s/), %d other Nodes", net, len(rep.Leases), rep.Prefix, rep.OtherNodes)
}
