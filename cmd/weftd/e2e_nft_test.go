package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/ops/teardown"
	"github.com/weftnet/weft/test/netnstest"
)

const (
	iptConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	nftConf = `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`
)

// nftTables returns `nft list tables` in the host's namespace.
func (h *host) nftTables(t *testing.T) string {
	t.Helper()
	return h.ns.MustExec(t, "nft", "list", "tables")
}

// flannelIPTables returns the lines of iptables -S (nat and filter) that
// name Weft's chains.
func (h *host) flannelIPTables(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, tbl := range []string{"nat", "filter"} {
		for _, l := range strings.Split(h.ns.MustExec(t, "iptables", "-w", "-t", tbl, "-S"), "\n") {
			if strings.Contains(l, "FLANNEL") {
				b.WriteString(tbl + " " + l + "\n")
			}
		}
	}
	return b.String()
}

func (c *cluster) setConfig(t *testing.T, conf string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.etcd.Client().Put(ctx, "/coreos.com/network/config", conf); err != nil {
		t.Fatal(err)
	}
}

// TestE2ENFTables runs weftd in nftables mode (EnableNFTables): a restart
// from iptables mode leaves only the nftables tables, pods keep reaching
// each other, a pod reaches a host outside the network masqueraded as its
// node, a table flushed by hand comes back within the resync period, a
// restart back in iptables mode leaves only the iptables chains, and node
// teardown removes the tables.
func TestE2ENFTables(t *testing.T) {
	t.Parallel()
	netnstest.SkipUnlessRoot(t)
	netnstest.RequireTool(t, "nft", "nftables")
	netnstest.RequireTool(t, "iptables", "iptables")
	c := newCluster(t, 2, iptConf, 30*time.Second)
	startAll(t, c)
	h1 := c.hosts[0]
	c.checkMesh()
	if got := h1.flannelIPTables(t); !strings.Contains(got, "-N FLANNEL-POSTRTG") || !strings.Contains(got, "-N FLANNEL-FWD") {
		t.Fatalf("iptables mode did not set up its chains:\n%s", got)
	}

	// Restart host1 in nftables mode.
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	c.setConfig(t, nftConf)
	h1.start()
	h1.waitReady()
	if got := h1.flannelIPTables(t); got != "" {
		t.Errorf("after the switch to nftables, iptables still holds:\n%s", got)
	}
	if got := h1.nftTables(t); !strings.Contains(got, "table ip flannel-ipv4") || strings.Contains(got, "flannel-ipv6") {
		t.Errorf("nft tables after the switch: %q, want flannel-ipv4 only (IPv6 is off)", got)
	}
	table := h1.ns.MustExec(t, "nft", "list", "table", "ip", "flannel-ipv4")
	for _, want := range []string{"chain forward", "chain postrtg", "meta mark & 0x00004000 == 0x00004000 return",
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"} {
		if !strings.Contains(table, want) {
			t.Errorf("flannel-ipv4 lacks %q:\n%s", want, table)
		}
	}
	c.checkMesh()

	// A host outside the cluster network, on the test bridge, sees host1's
	// address as the source of host1's pod.
	outside := netnstest.NewNS(t, "out")
	a := c.underlay.Addr()
	for range 10 { // .10: the hosts start at .2
		a = a.Next()
	}
	outAddr := netip.PrefixFrom(a, 24)
	c.bridge.Join(t, outside, "eth0", outAddr)
	src, err := netnstest.SourceSeen(h1.pod, outside, netip.AddrPortFrom(outAddr.Addr(), 8080), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if src != h1.addr {
		t.Errorf("the outside host saw %s as the source of host1's pod, want host1's %s", src, h1.addr)
	}

	// Flushed by hand: back within the resync period (1 s here).
	h1.ns.MustExec(t, "nft", "flush", "table", "ip", "flannel-ipv4")
	eventually(t, 5*time.Second, "flannel-ipv4 restored", func() error {
		if got := h1.ns.MustExec(t, "nft", "list", "table", "ip", "flannel-ipv4"); got != table {
			return fmt.Errorf("table now:\n%s", got)
		}
		return nil
	})

	// Back to iptables mode.
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	c.setConfig(t, iptConf)
	h1.start()
	h1.waitReady()
	if got := h1.nftTables(t); strings.Contains(got, "flannel-ipv") {
		t.Errorf("after the switch to iptables, nft still lists: %q", got)
	}
	if got := h1.flannelIPTables(t); !strings.Contains(got, "-N FLANNEL-POSTRTG") || !strings.Contains(got, "-N FLANNEL-FWD") {
		t.Errorf("iptables after the switch back:\n%s", got)
	}
	c.checkMesh()

	// Teardown of a node in nftables mode removes its table.
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	c.setConfig(t, nftConf)
	h1.start()
	h1.waitReady()
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	var rep *teardown.Report
	if err := h1.ns.Do(func() (err error) {
		rep, err = teardown.Run(context.Background(), teardown.Options{SubnetFile: h1.envPath})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !rep.NFTables || !rep.IPTables {
		t.Errorf("teardown report %+v", rep)
	}
	if got := h1.nftTables(t); strings.Contains(got, "flannel-ipv") {
		t.Errorf("after teardown nft still lists: %q", got)
	}
}
