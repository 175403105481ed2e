package hostgw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

func peer(i int, far bool) subnet.Lease {
	ip := netip.AddrFrom4([4]byte{192, 168, 0, byte(100 + i)})
	if far {
		ip = netip.AddrFrom4([4]byte{172, 16, 0, byte(100 + i)})
	}
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: ip, BackendType: TypeName},
	}
}

type rig struct {
	fake *netlinkx.Fake
	b    *Backend
	own  subnet.Lease
}

func newRig(t testing.TB) *rig {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	fake := netlinkx.NewFake()
	eth0 := fake.AddLink("eth0", 1500, netip.MustParsePrefix("192.168.0.1/24"))
	addr := netip.MustParseAddr("192.168.0.1")
	b, err := New(context.Background(), backend.Params{
		Config: cfg,
		Ext:    backend.ExternalInterface{Name: "eth0", Index: eth0.Index, MTU: 1500, Addr: addr, PublicIP: addr},
	}, Config{Netlink: fake, VerifyEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &rig{fake: fake, b: b, own: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: addr}}}
}

func (r *rig) set(peers []subnet.Lease) error {
	return r.b.Set(context.Background(), backend.State{Own: r.own, Peers: peers})
}

const golden = `addr eth0 192.168.0.1/24
addr lo 127.0.0.1/8
link eth0 veth mtu 1500 mac 02:ee:00:00:00:02 up
link lo device mtu 65536 mac 00:00:00:00:00:00 up
route 10.244.2.0/24 via 192.168.0.102 dev eth0
route 10.244.3.0/24 via 192.168.0.103 dev eth0
route 10.244.5.0/24 via 192.168.0.105 dev eth0
route 192.168.0.0/24 dev eth0
`

func TestStates(t *testing.T) {
	final := []subnet.Lease{peer(2, false), peer(3, false), peer(5, false)}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			r := newRig(t)
			for range 6 {
				var ps []subnet.Lease
				for i := 2; i < 9; i++ {
					if rng.IntN(2) == 0 {
						p := peer(i, false)
						if rng.IntN(4) == 0 { // the node moved
							p.Attrs.PublicIP = netip.AddrFrom4([4]byte{192, 168, 0, byte(200 + i)})
						}
						ps = append(ps, p)
					}
				}
				if err := r.set(ps); err != nil {
					t.Fatal(err)
				}
			}
			ps := append([]subnet.Lease(nil), final...)
			rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
			if err := r.set(ps); err != nil {
				t.Fatal(err)
			}
			if got := r.fake.Dump(); got != golden {
				t.Errorf("got:\n%s\nwant:\n%s", got, golden)
			}
			w := r.fake.Writes()
			if err := r.set(ps); err != nil || r.fake.Writes() != w {
				t.Errorf("idle Set: err %v, %d writes", err, r.fake.Writes()-w)
			}
		})
	}
}

func TestOffLinkAndBadPeersSkipped(t *testing.T) {
	r := newRig(t)
	far := peer(7, true)
	bogus := peer(8, false)
	bogus.Attrs.PublicIP = netip.MustParseAddr("0.0.0.0")
	wrongType := peer(9, false)
	wrongType.Attrs.BackendType = "vxlan"
	err := r.set([]subnet.Lease{far, peer(2, false), bogus, peer(3, false), wrongType, peer(5, false)})
	if err == nil {
		t.Fatal("no error for bad peers")
	}
	for _, p := range []subnet.Lease{far, bogus, wrongType} {
		if !strings.Contains(err.Error(), p.Key()) {
			t.Errorf("error does not name %s: %v", p.Key(), err)
		}
	}
	if !strings.Contains(err.Error(), "not on a directly connected subnet") {
		t.Errorf("off-link error unclear: %v", err)
	}
	if got := r.fake.Dump(); got != golden {
		t.Errorf("got:\n%s\nwant:\n%s", got, golden)
	}
}

func TestSelfHeal(t *testing.T) {
	r := newRig(t)
	ps := []subnet.Lease{peer(2, false), peer(3, false), peer(5, false)}
	if err := r.set(ps); err != nil {
		t.Fatal(err)
	}
	if err := r.fake.DeleteRoute(netlinkx.Route{Dst: netip.MustParsePrefix("10.244.3.0/24")}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); r.fake.Dump() != golden; {
		select {
		case <-r.b.Changes():
		case <-time.After(time.Until(deadline)):
			t.Fatalf("not healed:\n%s", r.fake.Dump())
		}
		if err := r.set(ps); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLeaseAttrs(t *testing.T) {
	r := newRig(t)
	a := subnet.LeaseAttrs{BackendData: []byte(`{"x":1}`)}
	if err := r.b.LeaseAttrs(&a); err != nil || a.BackendType != "host-gw" || a.BackendData != nil {
		t.Errorf("LeaseAttrs = %+v, %v", a, err)
	}
	b, _ := a.Marshal()
	if strings.Contains(string(b), "BackendData") {
		t.Errorf("marshalled lease has BackendData: %s", b)
	}
	if r.b.MTU() != 1500 {
		t.Errorf("MTU = %d", r.b.MTU())
	}
}
