package netlinkx_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/kernel/netlinkx"
)

// The Handle's subscription leaves out the echoes of its own neighbour and
// route writes (its socket filter drops them in the kernel) and reads every
// change made by anyone else, with the fields the programmer compares.
func TestSubscribeLeavesOutOwnEchoes(t *testing.T) {
	ns, h := underlayNS(t, "nlxs")
	e := env{h}
	vx := upVXLAN(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	own := netlinkx.Route{Table: netlinkx.MainTable, Dst: subnet("10.244.2.0/24"), Gw: addr("10.244.2.0"), LinkIndex: vx, OnLink: true}
	if errs := h.Apply([]netlinkx.Op{
		{Kind: netlinkx.OpSetNeigh, Neigh: netlinkx.Neigh{LinkIndex: vx, IP: addr("10.244.2.0"), MAC: macB}},
		{Kind: netlinkx.OpSetFDB, FDB: netlinkx.FDB{LinkIndex: vx, MAC: macB, Dst: peer2}},
		{Kind: netlinkx.OpReplaceRoute, Route: own},
	}); errs != nil {
		t.Fatal(errs)
	}
	// Someone else's changes, the last one a marker.
	ns.MustExec(t, "ip", "neigh", "replace", "10.244.3.0", "dev", "flannel.1", "lladdr", macC.String(), "nud", "permanent")
	ns.MustExec(t, "ip", "route", "replace", "10.244.3.0/24", "via", "10.244.3.0", "dev", "flannel.1", "onlink")
	ns.MustExec(t, "ip", "-6", "route", "replace", "fd00:10:244:3::/64", "via", "2001:db8::3", "dev", "eth0", "onlink")
	ns.MustExec(t, "ip", "route", "del", "10.244.2.0/24")
	ns.MustExec(t, "ip", "route", "replace", "10.244.99.0/24", "dev", "eth0")

	const last = "route 10.244.99.0/24 via invalid IP onlink false eth0 table 254"
	want := map[string]bool{
		"neigh 10.244.3.0 " + macC.String() + " permanent":                           false,
		"route 10.244.3.0/24 via 10.244.3.0 onlink true flannel.1 table 254":         false,
		"route fd00:10:244:3::/64 via 2001:db8::3 onlink true eth0 table 254":        false,
		"deleted route 10.244.2.0/24 via 10.244.2.0 onlink true flannel.1 table 254": false,
		last: false,
	}
	name := func(i int) string {
		switch i {
		case vx:
			return "flannel.1"
		case e.idx("eth0"):
			return "eth0"
		}
		return "other"
	}
	deadline := time.After(10 * time.Second)
	for {
		var u netlinkx.Update
		select {
		case u = <-updates:
		case <-deadline:
			t.Fatalf("updates still missing after 10 s: %v", want)
		}
		var key string
		switch u.Kind {
		case netlinkx.NeighUpdate:
			if u.Neigh.IP == addr("10.244.2.0") {
				t.Errorf("the echo of the own neighbour write arrived: %+v", u)
			}
			key = "neigh " + u.Neigh.IP.String() + " " + u.Neigh.MAC.String()
			if u.Neigh.Permanent {
				key += " permanent"
			}
		case netlinkx.RouteUpdate:
			r := u.Route
			if r.Dst == own.Dst && !u.Deleted {
				t.Errorf("the echo of the own route write arrived: %+v", u)
			}
			key = fmt.Sprintf("route %s via %s onlink %v %s table %d", r.Dst, r.Gw, r.OnLink, name(r.LinkIndex), r.Table)
			if u.Deleted {
				key = "deleted " + key
			}
		case netlinkx.LostUpdates:
			t.Fatalf("updates lost: %v", u.Err)
		}
		if _, ok := want[key]; ok {
			want[key] = true
		} else if key != "" {
			t.Logf("also: %s", key)
		}
		if want[last] {
			break
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no update %q", k)
		}
	}
}
