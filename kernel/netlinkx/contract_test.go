package netlinkx_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/test/netnstest"
)

// The fake is what every backend golden test trusts. This contract test runs
// one script of link, address, neighbour, FDB and route operations against
// the fake and against a real netlink handle in a fresh network namespace,
// and after every step compares what each returned (success, or the kind of
// error) and the state each then lists through the Interface.

// Names of the links the script touches; the dump covers these.
var contractLinks = []string{"lo", "eth0", "flannel.1", "flannel-v6.1"}

// The script's addresses.
var (
	macB   = mustMAC("02:bb:00:00:00:02")
	macC   = mustMAC("02:cc:00:00:00:03")
	macD   = mustMAC("02:dd:00:00:00:04")
	vtep   = mustMAC("02:aa:00:00:00:01")
	local  = netip.MustParseAddr("192.168.0.1")
	local6 = netip.MustParseAddr("2001:db8::1")
	peer6  = netip.MustParseAddr("2001:db8::2")
	peer2  = netip.MustParseAddr("192.168.0.2")
	peer3  = netip.MustParseAddr("192.168.0.3")
	far    = netip.MustParseAddr("172.16.0.4")
	subnet = netip.MustParsePrefix
	addr   = netip.MustParseAddr
)

func mustMAC(s string) netlinkx.MAC {
	m, err := netlinkx.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// env resolves link names to indexes in one implementation.
type env struct {
	nl netlinkx.Interface
}

// idx returns the index of the named link, or 9999 (no such link).
func (e env) idx(name string) int {
	l, err := e.nl.LinkByName(name)
	if err != nil {
		return 9999
	}
	return l.Index
}

func (e env) vxlan(mtu int) error {
	_, err := e.nl.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel.1", MTU: mtu, MAC: vtep,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: local, VtepDevIndex: e.idx("eth0")}})
	return err
}

func (e env) vxlan6(mtu int) error {
	_, err := e.nl.AddVXLAN(netlinkx.NewVXLAN{Name: "flannel-v6.1", MTU: mtu, MAC: macC,
		VXLAN: netlinkx.VXLAN{VNI: 1, Port: 8472, Local: local6, VtepDevIndex: e.idx("eth0")}})
	return err
}

func (e env) route(dst string, gw string, dev string, onlink bool, table int) netlinkx.Route {
	r := netlinkx.Route{Table: table, Dst: subnet(dst), LinkIndex: e.idx(dev), OnLink: onlink}
	if gw != "" {
		r.Gw = addr(gw)
	}
	return r
}

// apply runs ops through Interface.Apply and returns nil when all were
// written, else an error listing each failed op's index and outcome, the
// same text for both implementations when they agree.
func (e env) apply(ops ...netlinkx.Op) error {
	errs := e.nl.Apply(ops)
	if len(errs) == 0 {
		return nil
	}
	var b strings.Builder
	for _, oe := range errs {
		fmt.Fprintf(&b, "op %d: %s; ", oe.Index, outcome(oe.Err))
	}
	return errors.New(b.String())
}

type step struct {
	name string
	do   func(e env) error
}

var script = []step{
	{"nothing yet", func(env) error { return nil }},
	{"vxlan device", func(e env) error { return e.vxlan(1450) }},
	{"vxlan device again", func(e env) error { return e.vxlan(1450) }},
	{"address on the down device", func(e env) error { return e.nl.AddAddr(e.idx("flannel.1"), subnet("10.244.1.0/32")) }},
	{"same address again", func(e env) error { return e.nl.AddAddr(e.idx("flannel.1"), subnet("10.244.1.0/32")) }},
	{"onlink route on the down device", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.2.0/24", "10.244.2.0", "flannel.1", true, 0))
	}},
	{"route without gateway on the down device", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.9.0/24", "", "flannel.1", false, 0))
	}},
	{"neighbour on the down device", func(e env) error {
		return e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel.1"), IP: addr("10.244.9.0"), MAC: macD})
	}},
	{"device up", func(e env) error { return e.nl.SetLinkUp(e.idx("flannel.1")) }},
	{"onlink route", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.2.0/24", "10.244.2.0", "flannel.1", true, 0))
	}},
	{"same route again", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.2.0/24", "10.244.2.0", "flannel.1", true, 0))
	}},
	{"neighbour", func(e env) error {
		return e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel.1"), IP: addr("10.244.2.0"), MAC: macB})
	}},
	{"neighbour replaced", func(e env) error {
		return e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel.1"), IP: addr("10.244.2.0"), MAC: macC})
	}},
	{"fdb entry", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"same fdb entry again", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"fdb entry, same MAC, new destination", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer3})
	}},
	{"delete the replaced destination", func(e env) error {
		return e.nl.DeleteFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"fdb entry, back to the first destination", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"second fdb entry", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macC, Dst: peer3})
	}},
	{"a batch: entries, some failing, and entries after the failures", func(e env) error {
		i := e.idx("flannel.1")
		return e.apply(
			netlinkx.Op{Kind: netlinkx.OpSetNeigh, Neigh: netlinkx.Neigh{LinkIndex: i, IP: addr("10.244.20.0"), MAC: macD}},
			netlinkx.Op{Kind: netlinkx.OpSetFDB, FDB: netlinkx.FDB{LinkIndex: i, MAC: macD, Dst: peer2}},
			netlinkx.Op{Kind: netlinkx.OpReplaceRoute, Route: e.route("10.244.20.0/24", "10.244.20.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpDeleteRoute, Route: e.route("10.244.21.0/24", "10.244.21.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpReplaceRoute, Route: e.route("10.244.21.0/24", "10.244.21.0", "missing", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpSetNeigh, Neigh: netlinkx.Neigh{LinkIndex: 9999, IP: addr("10.244.21.0"), MAC: macD}},
			netlinkx.Op{Kind: netlinkx.OpReplaceRoute, Route: e.route("10.244.22.0/24", "10.244.22.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpDeleteNeigh, Neigh: netlinkx.Neigh{LinkIndex: i, IP: addr("10.244.23.0")}},
			netlinkx.Op{Kind: netlinkx.OpReplaceRoute, Route: e.route("10.244.24.0/24", far.String(), "eth0", false, 0)},
			netlinkx.Op{Kind: netlinkx.OpSetFDB, FDB: netlinkx.FDB{LinkIndex: i, MAC: macD, Dst: peer3}},
		)
	}},
	{"a batch undoing it, deleting one entry twice", func(e env) error {
		i := e.idx("flannel.1")
		return e.apply(
			netlinkx.Op{Kind: netlinkx.OpDeleteRoute, Route: e.route("10.244.20.0/24", "10.244.20.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpDeleteRoute, Route: e.route("10.244.22.0/24", "10.244.22.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpDeleteRoute, Route: e.route("10.244.22.0/24", "10.244.22.0", "flannel.1", true, 0)},
			netlinkx.Op{Kind: netlinkx.OpDeleteNeigh, Neigh: netlinkx.Neigh{LinkIndex: i, IP: addr("10.244.20.0")}},
			netlinkx.Op{Kind: netlinkx.OpDeleteFDB, FDB: netlinkx.FDB{LinkIndex: i, MAC: macD, Dst: peer3}},
		)
	}},
	{"gateway route on the underlay", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.3.0/24", "192.168.0.3", "eth0", false, 0))
	}},
	{"gateway off the underlay's prefixes", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.4.0/24", far.String(), "eth0", false, 0))
	}},
	{"same gateway onlink", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.4.0/24", far.String(), "eth0", true, 0))
	}},
	{"route moved to the device", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.3.0/24", "10.244.3.0", "flannel.1", true, 0))
	}},
	{"route without gateway", func(e env) error { return e.nl.ReplaceRoute(e.route("10.244.5.0/24", "", "eth0", false, 0)) }},
	{"route in another table", func(e env) error {
		return e.nl.ReplaceRoute(e.route("10.244.6.0/24", "10.244.6.0", "flannel.1", true, 100))
	}},
	{"delete route naming another gateway", func(e env) error {
		return e.nl.DeleteRoute(e.route("10.244.2.0/24", "10.244.9.9", "flannel.1", true, 0))
	}},
	{"delete route naming another link", func(e env) error {
		return e.nl.DeleteRoute(e.route("10.244.2.0/24", "10.244.2.0", "eth0", true, 0))
	}},
	{"delete route", func(e env) error {
		return e.nl.DeleteRoute(e.route("10.244.2.0/24", "10.244.2.0", "flannel.1", true, 0))
	}},
	{"delete route again", func(e env) error {
		return e.nl.DeleteRoute(e.route("10.244.2.0/24", "10.244.2.0", "flannel.1", true, 0))
	}},
	{"delete route of the other table from main", func(e env) error {
		return e.nl.DeleteRoute(e.route("10.244.6.0/24", "10.244.6.0", "flannel.1", true, 0))
	}},
	{"delete neighbour", func(e env) error {
		return e.nl.DeleteNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel.1"), IP: addr("10.244.2.0")})
	}},
	{"delete neighbour again", func(e env) error {
		return e.nl.DeleteNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel.1"), IP: addr("10.244.2.0")})
	}},
	{"delete fdb entry", func(e env) error {
		return e.nl.DeleteFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"delete fdb entry again", func(e env) error {
		return e.nl.DeleteFDB(netlinkx.FDB{LinkIndex: e.idx("flannel.1"), MAC: macB, Dst: peer2})
	}},
	{"address with a prefix on the up underlay", func(e env) error { return e.nl.AddAddr(e.idx("eth0"), subnet("10.9.0.1/24")) }},
	{"delete that address", func(e env) error { return e.nl.DeleteAddr(e.idx("eth0"), subnet("10.9.0.1/24")) }},
	{"delete a missing address", func(e env) error { return e.nl.DeleteAddr(e.idx("eth0"), subnet("10.9.0.1/24")) }},
	{"smaller MTU", func(e env) error { return e.nl.SetLinkMTU(e.idx("flannel.1"), 1400) }},
	{"MTU above the underlay's less the VXLAN overhead", func(e env) error { return e.nl.SetLinkMTU(e.idx("flannel.1"), 1460) }},
	{"MTU below the minimum", func(e env) error { return e.nl.SetLinkMTU(e.idx("flannel.1"), 67) }},
	{"neighbour, fdb entry and route before the device goes", func(e env) error {
		i := e.idx("flannel.1")
		return errors.Join(
			e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: i, IP: addr("10.244.7.0"), MAC: macD}),
			e.nl.SetFDB(netlinkx.FDB{LinkIndex: i, MAC: macD, Dst: peer2}),
			e.nl.ReplaceRoute(e.route("10.244.7.0/24", "10.244.7.0", "flannel.1", true, 0)),
		)
	}},
	{"delete the device", func(e env) error { return e.nl.DeleteLink(e.idx("flannel.1")) }},
	{"delete the device again", func(e env) error { return e.nl.DeleteLink(9999) }},
	{"route on a missing link", func(e env) error { return e.nl.ReplaceRoute(e.route("10.244.8.0/24", "", "flannel.1", false, 0)) }},
	{"neighbour on a missing link", func(e env) error {
		return e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: 9999, IP: addr("10.244.8.0"), MAC: macD})
	}},
	{"vxlan device too big for the underlay (the kernel clamps)", func(e env) error { return e.vxlan(1480) }},
	{"delete it", func(e env) error { return e.nl.DeleteLink(e.idx("flannel.1")) }},
	{"vxlan device, default MTU", func(e env) error { return e.vxlan(0) }},
	// IPv6: the underlay's address, flannel-v6.1 and one peer's entries.
	{"IPv6 address on the underlay", func(e env) error { return e.nl.AddAddr(e.idx("eth0"), netip.PrefixFrom(local6, 64)) }},
	{"IPv6 vxlan device too big for the underlay (the kernel clamps at less 70)", func(e env) error { return e.vxlan6(1450) }},
	{"IPv6 device MTU above the underlay's less 70", func(e env) error { return e.nl.SetLinkMTU(e.idx("flannel-v6.1"), 1440) }},
	{"IPv6 device MTU", func(e env) error { return e.nl.SetLinkMTU(e.idx("flannel-v6.1"), 1400) }},
	{"IPv6 device up", func(e env) error { return e.nl.SetLinkUp(e.idx("flannel-v6.1")) }},
	{"IPv6 host address on the device", func(e env) error {
		return e.nl.AddAddr(e.idx("flannel-v6.1"), subnet("fd00:10:244:1::/128"))
	}},
	{"IPv6 neighbour", func(e env) error {
		return e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel-v6.1"), IP: addr("fd00:10:244:2::"), MAC: macB})
	}},
	{"IPv6 fdb entry", func(e env) error {
		return e.nl.SetFDB(netlinkx.FDB{LinkIndex: e.idx("flannel-v6.1"), MAC: macB, Dst: peer6})
	}},
	{"IPv6 onlink route", func(e env) error {
		return e.nl.ReplaceRoute(e.route("fd00:10:244:2::/64", "fd00:10:244:2::", "flannel-v6.1", true, 0))
	}},
	{"IPv6 gateway route on the underlay", func(e env) error {
		return e.nl.ReplaceRoute(e.route("fd00:10:244:3::/64", "2001:db8::3", "eth0", false, 0))
	}},
	{"delete the IPv6 onlink route", func(e env) error {
		return e.nl.DeleteRoute(e.route("fd00:10:244:2::/64", "fd00:10:244:2::", "flannel-v6.1", true, 0))
	}},
	{"delete the IPv6 neighbour", func(e env) error {
		return e.nl.DeleteNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel-v6.1"), IP: addr("fd00:10:244:2::")})
	}},
	{"delete the IPv6 neighbour again", func(e env) error {
		return e.nl.DeleteNeigh(netlinkx.Neigh{LinkIndex: e.idx("flannel-v6.1"), IP: addr("fd00:10:244:2::")})
	}},
	{"IPv6 neighbour, fdb entry and route before the device goes", func(e env) error {
		i := e.idx("flannel-v6.1")
		return errors.Join(
			e.nl.SetNeigh(netlinkx.Neigh{LinkIndex: i, IP: addr("fd00:10:244:4::"), MAC: macD}),
			e.nl.ReplaceRoute(e.route("fd00:10:244:4::/64", "fd00:10:244:4::", "flannel-v6.1", true, 0)),
		)
	}},
	{"delete the IPv6 device", func(e env) error { return e.nl.DeleteLink(e.idx("flannel-v6.1")) }},
}

// kernelOwn reports whether a dump line is the kernel's own IPv6
// plumbing, which the fake does not model and no backend owns or reads:
// link-local addresses and their fe80::/64 routes, ::1 on lo, multicast
// neighbours (MLD), and routes on the kernel side of the underlay's veth.
// ensureAddr leaves link-local addresses alone, ownsRoute never matches
// fe80::/64, and the programmer reads permanent neighbours only.
func kernelOwn(line string) bool {
	return strings.Contains(line, " fe80:") || strings.Contains(line, " fe80::/64") || strings.HasPrefix(line, "addr lo ::1/128") ||
		strings.HasPrefix(line, "neigh ff02:") || strings.Contains(line, " dev #")
}

// outcome names what an operation returned: "ok", "not found", or the
// errno of another error.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, netlinkx.ErrNotFound) {
		return "not found"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "errno " + errno.Error()
	}
	return "error without errno: " + err.Error()
}

// dump lists, through the Interface, everything the script can have made:
// the named links with their addresses, neighbours and FDB entries, and the
// routes of the main table and table 100.
func dump(t *testing.T, nl netlinkx.Interface) string {
	t.Helper()
	var lines []string
	name := map[int]string{}
	var idxs []int
	for _, n := range contractLinks {
		l, err := nl.LinkByName(n)
		if errors.Is(err, netlinkx.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		name[l.Index] = n
		idxs = append(idxs, l.Index)
		s := fmt.Sprintf("link %s type %s mtu %d mac %s up %v", l.Name, l.Type, l.MTU, l.MAC, l.Up)
		if v := l.VXLAN; v != nil {
			s += fmt.Sprintf(" vni %d port %d local %s dev #%d learning %v gbp %v", v.VNI, v.Port, v.Local, v.VtepDevIndex, v.Learning, v.GBP)
		}
		lines = append(lines, s)
	}
	linkName := func(i int) string {
		if n, ok := name[i]; ok {
			return n
		}
		return fmt.Sprintf("#%d", i)
	}
	for _, i := range idxs {
		as, err := nl.Addrs(i)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			lines = append(lines, fmt.Sprintf("addr %s %s", linkName(i), a))
		}
		ns, err := nl.Neighs(i)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			lines = append(lines, fmt.Sprintf("neigh %s dev %s lladdr %s permanent %v", n.IP, linkName(n.LinkIndex), n.MAC, n.Permanent))
		}
		fs, err := nl.FDBs(i)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			lines = append(lines, fmt.Sprintf("fdb %s dev %s dst %s", f.MAC, linkName(f.LinkIndex), f.Dst))
		}
	}
	for _, table := range []int{0, 100} {
		rs, err := nl.Routes(table, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			lines = append(lines, fmt.Sprintf("route table %d %s via %v dev %s onlink %v", table, r.Dst, r.Gw, linkName(r.LinkIndex), r.OnLink))
		}
	}
	lines = slices.DeleteFunc(lines, kernelOwn)
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestFakeMatchesKernel(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "nlx")
	fake := netlinkx.NewFake()
	eth0 := fake.AddLink("eth0", 1500, netip.PrefixFrom(local, 24))
	// The same underlay in the kernel: a veth (the fake's link type) with
	// the fake's MAC, up, holding the same address.
	ns.MustExec(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.MustExec(t, "ip", "link", "set", "eth0", "address", eth0.MAC.String(), "mtu", "1500")
	ns.MustExec(t, "ip", "addr", "add", netip.PrefixFrom(local, 24).String(), "dev", "eth0")
	ns.MustExec(t, "ip", "link", "set", "eth0p", "up")
	ns.MustExec(t, "ip", "link", "set", "eth0", "up")
	real := ns.Netlink(t)
	impls := []struct {
		name string
		e    env
	}{{"kernel", env{real}}, {"fake", env{fake}}}

	for _, s := range script {
		var out [2]string
		var errs [2]error
		var dumps [2]string
		for i, im := range impls {
			errs[i] = s.do(im.e)
			out[i] = outcome(errs[i])
			dumps[i] = dump(t, im.e.nl)
		}
		// The kernel's indexes differ from the fake's; VtepDevIndex is
		// compared through the name.
		for i, im := range impls {
			dumps[i] = strings.ReplaceAll(dumps[i], fmt.Sprintf("dev #%d", im.e.idx("eth0")), "dev eth0")
		}
		if out[0] != out[1] {
			t.Errorf("step %q: kernel: %s (%v), fake: %s (%v)", s.name, out[0], errs[0], out[1], errs[1])
		}
		if dumps[0] != dumps[1] {
			t.Errorf("step %q: the states differ:\n%s", s.name, diffLines(dumps[0], dumps[1]))
		}
		t.Logf("step %q: %s", s.name, out[0])
	}
}

// diffLines lists the lines only the kernel has ("kernel only:") and only
// the fake has ("fake only:").
func diffLines(kernel, fake string) string {
	k, f := strings.Split(kernel, "\n"), strings.Split(fake, "\n")
	var b strings.Builder
	for _, l := range k {
		if !slices.Contains(f, l) {
			b.WriteString("  kernel only: " + l + "\n")
		}
	}
	for _, l := range f {
		if !slices.Contains(k, l) {
			b.WriteString("  fake only:   " + l + "\n")
		}
	}
	return b.String()
}

// underlayNS returns a fresh namespace whose eth0 (one end of a veth pair,
// up) holds local/24, and a Handle in it.
func underlayNS(t *testing.T, name string) (*netnstest.NS, *netlinkx.Handle) {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, name)
	ns.MustExec(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.MustExec(t, "ip", "addr", "add", netip.PrefixFrom(local, 24).String(), "dev", "eth0")
	ns.MustExec(t, "ip", "link", "set", "eth0", "up")
	return ns, ns.Netlink(t)
}

// upVXLAN creates flannel.1 on h, brings it up and returns its index.
func upVXLAN(t *testing.T, h netlinkx.Interface) int {
	t.Helper()
	e := env{h}
	if err := e.vxlan(0); err != nil {
		t.Fatal(err)
	}
	idx := e.idx("flannel.1")
	if err := h.SetLinkUp(idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// A peer that keeps its VtepMAC and moves to another PublicIP: the
// programmer writes the new destination before it deletes the old, so the
// kernel must end with the new one (with an append, the kernel kept the old
// destination and the delete then removed the MAC's only entry).
func TestProgrammerMovesFDBDestination(t *testing.T) {
	_, h := underlayNS(t, "nlxp")
	idx := upVXLAN(t, h)
	p := netlinkx.NewProgrammer(h, func(netlinkx.Route, int) bool { return false }, -1)
	for _, dst := range []netip.Addr{peer2, peer3} {
		want := netlinkx.NewEntries(1)
		want.Neighs[addr("10.244.2.0")] = netlinkx.Neigh{LinkIndex: idx, IP: addr("10.244.2.0"), MAC: macB, Permanent: true}
		want.FDBs[netlinkx.FDB{LinkIndex: idx, MAC: macB, Dst: dst}] = struct{}{}
		if _, err := p.Sync(idx, want); err != nil {
			t.Fatal(err)
		}
		got, err := h.FDBs(idx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Dst != dst || got[0].MAC != macB {
			t.Errorf("kernel FDB after programming %s -> %s: %v", macB, dst, got)
		}
	}
}
