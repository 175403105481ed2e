package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

var (
	ownIP = netip.MustParseAddr("192.168.0.1")
	// flanneldMAC is a MAC of the kind flanneld takes: random, locally
	// administered, unicast.
	flanneldMAC = netlinkx.MAC{0x7a, 0x3b, 0x19, 0x0c, 0x44, 0xd1}
	// leaseMAC is the VtepMAC of this node's previous lease in the store.
	leaseMAC = netlinkx.MAC{0x6e, 0x11, 0x22, 0x33, 0x44, 0x55}
)

// previousLease returns this node's lease as the store would hold it, with
// the given backend type and data.
func previousLease(typ, data string) *subnet.Lease {
	return &subnet.Lease{
		Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Attrs:  subnet.LeaseAttrs{PublicIP: ownIP, BackendType: typ, BackendData: json.RawMessage(data)},
	}
}

// lookup counts the calls of a backend.Params.Previous function.
type lookup struct {
	lease *subnet.Lease
	err   error
	calls int
}

func (l *lookup) previous(context.Context) (*subnet.Lease, error) {
	l.calls++
	return l.lease, l.err
}

// newFakeHost returns a fake kernel with the underlay eth0 (192.168.0.1/24)
// and a second link eth1.
func newFakeHost() (*netlinkx.Fake, netlinkx.Link, netlinkx.Link) {
	f := netlinkx.NewFake()
	eth0 := f.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"))
	eth1 := f.AddLink("eth1", 1500, netip.MustParsePrefix("192.168.7.1/24"))
	return f, eth0, eth1
}

func newBackend(t *testing.T, f *netlinkx.Fake, eth0 netlinkx.Link, prev func(context.Context) (*subnet.Lease, error)) (*Backend, error) {
	t.Helper()
	b, err := New(context.Background(), backend.Params{
		Config:   mustConfig(t, `{"Type":"vxlan"}`),
		Ext:      backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: ownIP, PublicIP: ownIP},
		Previous: prev,
	}, Config{Netlink: f, VerifyEvery: time.Hour})
	if err == nil {
		t.Cleanup(func() { b.Close() })
	}
	return b, err
}

// TestAdoptOrRecreate is the decision New takes about an existing
// flannel.1: adopt it with its MAC when it carries the data plane as
// configured, recreate it otherwise, and choose the MAC of a new device
// from the previous lease or by derivation.
func TestAdoptOrRecreate(t *testing.T) {
	derived := VtepMAC(ownIP, 1)
	good := func(eth0, _ netlinkx.Link) netlinkx.NewVXLAN {
		return netlinkx.NewVXLAN{Name: "flannel.1", MTU: 1450, MAC: flanneldMAC,
			VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: ownIP, VtepDevIndex: eth0.Index}}
	}
	with := func(change func(v *netlinkx.NewVXLAN, eth0, eth1 netlinkx.Link)) func(eth0, eth1 netlinkx.Link) netlinkx.NewVXLAN {
		return func(eth0, eth1 netlinkx.Link) netlinkx.NewVXLAN {
			v := good(eth0, eth1)
			change(&v, eth0, eth1)
			return v
		}
	}
	withLease := &lookup{lease: previousLease("vxlan", `{"VNI":1,"VtepMAC":"`+leaseMAC.String()+`"}`)}
	for _, tc := range []struct {
		name string
		// existing describes the flannel.1 found at start (nil: none).
		existing func(eth0, eth1 netlinkx.Link) netlinkx.NewVXLAN
		// plain makes the existing flannel.1 a veth instead.
		plain bool
		// down leaves the existing device down.
		down bool
		prev *lookup // nil: Params.Previous is nil
		// adopt: the same device afterwards; else a new one.
		adopt bool
		mac   netlinkx.MAC
		// lookups is how often the previous lease was looked up.
		lookups int
	}{
		{name: "no device, no lookup", mac: derived},
		{name: "no device, no previous lease", prev: &lookup{}, mac: derived, lookups: 1},
		{name: "no device, previous lease (a reboot)", prev: withLease, mac: leaseMAC, lookups: 1},
		{name: "no device, previous lease of another VNI", prev: &lookup{lease: previousLease("vxlan", `{"VNI":2,"VtepMAC":"`+leaseMAC.String()+`"}`)}, mac: derived, lookups: 1},
		{name: "no device, previous host-gw lease", prev: &lookup{lease: previousLease("host-gw", `null`)}, mac: derived, lookups: 1},
		{name: "no device, previous lease without VtepMAC", prev: &lookup{lease: previousLease("vxlan", `{"VNI":1}`)}, mac: derived, lookups: 1},
		{name: "no device, previous lease with a multicast VtepMAC", prev: &lookup{lease: previousLease("vxlan", `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`)}, mac: derived, lookups: 1},
		{name: "no device, lookup fails", prev: &lookup{err: errors.New("etcd unavailable")}, mac: derived, lookups: 1},
		{name: "flanneld's device", existing: good, adopt: true, mac: flanneldMAC},
		{name: "flanneld's device, its MAC wins over the lease's", existing: good, prev: withLease, adopt: true, mac: flanneldMAC},
		{name: "flanneld's device, down, other MTU", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.MTU = 1400 }), down: true, adopt: true, mac: flanneldMAC},
		{name: "the device weftd derived", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.MAC = derived }), adopt: true, mac: derived},
		{name: "other port", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.Port = 4789 }), mac: derived},
		{name: "other port, previous lease", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.Port = 4789 }), prev: withLease, mac: leaseMAC, lookups: 1},
		{name: "other VNI", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.VNI = 2 }), mac: derived},
		{name: "other local address", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.Local = netip.MustParseAddr("192.168.0.9") }), mac: derived},
		{name: "other underlay link", existing: with(func(v *netlinkx.NewVXLAN, _, eth1 netlinkx.Link) { v.VtepDevIndex = eth1.Index }), mac: derived},
		{name: "GBP on", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.GBP = true }), mac: derived},
		{name: "learning on", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.Learning = true }), mac: derived},
		{name: "multicast MAC", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.MAC = netlinkx.MAC{0x01, 0, 0x5e, 0, 0, 1} }), mac: derived},
		{name: "zero MAC", existing: with(func(v *netlinkx.NewVXLAN, _, _ netlinkx.Link) { v.MAC = netlinkx.MAC{} }), mac: derived},
		{name: "not a vxlan device", plain: true, prev: withLease, mac: leaseMAC, lookups: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, eth0, eth1 := newFakeHost()
			before := -1
			switch {
			case tc.plain:
				before = f.AddLink("flannel.1", 1500).Index
			case tc.existing != nil:
				l, err := f.AddVXLAN(tc.existing(eth0, eth1))
				if err != nil {
					t.Fatal(err)
				}
				if !tc.down {
					if err := f.SetLinkUp(l.Index); err != nil {
						t.Fatal(err)
					}
				}
				before = l.Index
			}
			var prev func(context.Context) (*subnet.Lease, error)
			if tc.prev != nil {
				lk := *tc.prev // a fresh counter per case
				tc.prev = &lk
				prev = lk.previous
			}
			b, err := newBackend(t, f, eth0, prev)
			if err != nil {
				t.Fatal(err)
			}
			l, err := f.LinkByName("flannel.1")
			if err != nil {
				t.Fatal(err)
			}
			if adopted := l.Index == before; adopted != tc.adopt {
				t.Errorf("device index %d, was %d: adopted=%t, want %t", l.Index, before, adopted, tc.adopt)
			}
			if l.MAC != tc.mac {
				t.Errorf("device MAC %s, want %s", l.MAC, tc.mac)
			}
			if v := l.VXLAN; v == nil || misfit(l, b.v4.want()) != "" || !l.Up || l.MTU != 1450 {
				t.Errorf("device not as configured afterwards: %+v %+v", l, v)
			}
			calls := 0
			if tc.prev != nil {
				calls = tc.prev.calls
			}
			if calls != tc.lookups {
				t.Errorf("previous lease looked up %d times, want %d", calls, tc.lookups)
			}
			// The lease advertises the MAC the device has.
			var a subnet.LeaseAttrs
			if err := b.LeaseAttrs(&a); err != nil {
				t.Fatal(err)
			}
			if want := `{"VNI":1,"VtepMAC":"` + l.MAC.String() + `"}`; string(a.BackendData) != want {
				t.Errorf("BackendData %s, want %s", a.BackendData, want)
			}
		})
	}
}

// TestAdoptedMACKept: the MAC adopted at start is the device's for the life
// of the backend and across restarts: a device deleted under the backend is
// recreated with it, and a restarted backend adopts the device again
// without looking up the lease.
func TestAdoptedMACKept(t *testing.T) {
	f, eth0, _ := newFakeHost()
	if _, err := f.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel.1", MTU: 1450, MAC: flanneldMAC,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: ownIP, VtepDevIndex: eth0.Index}}); err != nil {
		t.Fatal(err)
	}
	lk := &lookup{lease: previousLease("vxlan", `{"VNI":1,"VtepMAC":"`+leaseMAC.String()+`"}`)}
	b, err := newBackend(t, f, eth0, lk.previous)
	if err != nil {
		t.Fatal(err)
	}
	own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: ownIP}}
	set := func() {
		t.Helper()
		if err := b.Set(context.Background(), backend.State{Own: own, Peers: []subnet.Lease{peer(2, false)}}); err != nil {
			t.Fatal(err)
		}
	}
	set()
	l, _ := f.LinkByName("flannel.1")
	if err := f.DeleteLink(l.Index); err != nil {
		t.Fatal(err)
	}
	waitChange(t, b)
	set()
	l2, err := f.LinkByName("flannel.1")
	if err != nil || l2.Index == l.Index || l2.MAC != flanneldMAC {
		t.Fatalf("after deletion: %+v (%v), want a new device with %s", l2, err, flanneldMAC)
	}
	if !strings.Contains(f.Dump(), "neigh 10.244.2.0 dev flannel.1") {
		t.Errorf("peer not programmed on the recreated device:\n%s", f.Dump())
	}
	b.Close()
	b2, err := newBackend(t, f, eth0, lk.previous)
	if err != nil {
		t.Fatal(err)
	}
	if b2.VtepMAC() != flanneldMAC || lk.calls != 0 {
		t.Errorf("restarted backend: MAC %s, %d lookups; want %s and none", b2.VtepMAC(), lk.calls, flanneldMAC)
	}
}

// TestFlanneldEntriesKept: the neighbours, FDB entries and routes flanneld
// left for the current peers are kept as they are (no delete and add); only
// those of a peer that is gone are removed.
func TestFlanneldEntriesKept(t *testing.T) {
	f, eth0, _ := newFakeHost()
	dev, err := f.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel.1", MTU: 1450, MAC: flanneldMAC,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: ownIP, VtepDevIndex: eth0.Index}})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.SetLinkUp(dev.Index))
	must(f.AddAddr(dev.Index, netip.MustParsePrefix("10.244.1.0/32")))
	peers := []subnet.Lease{peer(2, false), peer(3, false)}
	gone := peer(9, false)
	for _, p := range append([]subnet.Lease{gone}, peers...) {
		mac, err := ParseBackendData(p.Attrs.BackendData, 1)
		must(err)
		gw := p.Subnet.Addr()
		must(f.SetNeigh(netlinkx.Neigh{LinkIndex: dev.Index, IP: gw, MAC: mac, Permanent: true}))
		must(f.SetFDB(netlinkx.FDB{LinkIndex: dev.Index, MAC: mac, Dst: p.Attrs.PublicIP}))
		must(f.ReplaceRoute(netlinkx.Route{Dst: p.Subnet, Gw: gw, LinkIndex: dev.Index, OnLink: true}))
	}
	want := strings.NewReplacer(
		"neigh 10.244.9.0 dev flannel.1 lladdr "+VtepMAC(gone.Attrs.PublicIP, 1).String()+" permanent\n", "",
		"fdb "+VtepMAC(gone.Attrs.PublicIP, 1).String()+" dev flannel.1 dst 192.168.0.109\n", "",
		"route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink\n", "",
	).Replace(f.Dump())
	w := f.Writes()
	b, err := newBackend(t, f, eth0, nil)
	must(err)
	must(b.Set(context.Background(), backend.State{
		Own:   subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: ownIP}},
		Peers: peers,
	}))
	if n := f.Writes() - w; n != 3 {
		t.Errorf("adopting flanneld's state wrote %d times, want 3 (the gone peer's entries)", n)
	}
	if got := f.Dump(); got != want {
		t.Errorf("state after adoption:\n%s\nwant:\n%s", got, want)
	}
}
