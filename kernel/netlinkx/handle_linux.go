package netlinkx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var _ Interface = (*Handle)(nil)

// maxDumpAttempts bounds the retries of a dump that the kernel reports as
// interrupted (NLM_F_DUMP_INTR: the table changed while it was read).
const maxDumpAttempts = 10

// Handle implements Interface over netlink sockets bound to one network
// namespace.
type Handle struct {
	h  *netlink.Handle
	ns netns.NsHandle // owned duplicate; subscriptions open their sockets in it
	w  writer         // neighbour, FDB and route writes (write_linux.go)
}

// Open returns a Handle bound to the caller's current network namespace
// (that of the calling thread at the time of the call).
func Open() (*Handle, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening the current network namespace: %w", err)
	}
	defer ns.Close()
	return OpenAt(ns)
}

// OpenAt returns a Handle bound to the network namespace ns. The caller keeps
// ownership of ns; the Handle holds its own duplicate.
func OpenAt(ns netns.NsHandle) (*Handle, error) {
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating network namespace handle %d: %w", int(ns), err)
	}
	own := netns.NsHandle(fd)
	h, err := netlink.NewHandleAt(own, unix.NETLINK_ROUTE)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("opening a netlink socket in namespace %s: %w", own.UniqueId(), err)
	}
	return &Handle{h: h, ns: own}, nil
}

// OpenPath returns a Handle bound to the network namespace mounted at path
// (e.g. /var/run/netns/x).
func OpenPath(path string) (*Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer ns.Close()
	return OpenAt(ns)
}

// Close releases the Handle's sockets and namespace handle.
func (h *Handle) Close() error {
	h.w.mu.Lock()
	h.w.drop()
	h.w.mu.Unlock()
	h.h.Close()
	return h.ns.Close()
}

// retryDump calls dump until it is not interrupted, at most maxDumpAttempts
// times.
func retryDump[T any](what string, dump func() ([]T, error)) ([]T, error) {
	for range maxDumpAttempts {
		r, err := dump()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", what, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("listing %s: interrupted %d times in a row: %w", what, maxDumpAttempts, netlink.ErrDumpInterrupted)
}

func wrapNotFound(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var lnf netlink.LinkNotFoundError
	if errors.As(err, &lnf) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// noLink wraps ErrNotFound around an error saying that the link an entry
// was to be written on does not exist (ENODEV), as the Interface promises.
func noLink(err error) error {
	if errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// LinkByName implements Interface.
func (h *Handle) LinkByName(name string) (Link, error) {
	l, err := h.h.LinkByName(name)
	if err != nil {
		return Link{}, fmt.Errorf("looking up link %q: %w", name, wrapNotFound(err))
	}
	return fromNetlinkLink(l), nil
}

func fromNetlinkLink(l netlink.Link) Link {
	a := l.Attrs()
	out := Link{Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	out.MAC, _ = MACFrom(a.HardwareAddr)
	if v, ok := l.(*netlink.Vxlan); ok {
		local, _ := netip.AddrFromSlice(v.SrcAddr)
		out.VXLAN = &VXLAN{VNI: v.VxlanId, Port: v.Port, Local: local.Unmap(), VtepDevIndex: v.VtepDevIndex, GBP: v.GBP, Learning: v.Learning}
	}
	return out
}

// AddVXLAN implements Interface.
func (h *Handle) AddVXLAN(v NewVXLAN) (Link, error) {
	link := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: v.Name, MTU: v.MTU, HardwareAddr: v.MAC.HardwareAddr()},
		VxlanId:      v.VNI,
		VtepDevIndex: v.VtepDevIndex,
		SrcAddr:      v.Local.AsSlice(),
		Learning:     v.Learning,
		GBP:          v.GBP,
		Port:         v.Port,
	}
	if err := h.h.LinkAdd(link); err != nil {
		return Link{}, fmt.Errorf("creating vxlan device %s (vni %d, port %d, local %s): %w", v.Name, v.VNI, v.Port, v.Local, err)
	}
	return h.LinkByName(v.Name)
}

// DeleteLink implements Interface.
func (h *Handle) DeleteLink(index int) error {
	if err := h.h.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}); err != nil {
		return fmt.Errorf("deleting link #%d: %w", index, wrapNotFound(err))
	}
	return nil
}

// SetLinkUp implements Interface.
func (h *Handle) SetLinkUp(index int) error {
	if err := h.h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}); err != nil {
		return fmt.Errorf("setting link #%d up: %w", index, wrapNotFound(err))
	}
	return nil
}

// SetLinkMTU implements Interface.
func (h *Handle) SetLinkMTU(index, mtu int) error {
	if err := h.h.LinkSetMTU(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}, mtu); err != nil {
		return fmt.Errorf("setting the MTU of link #%d to %d: %w", index, mtu, wrapNotFound(err))
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixFrom(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrFrom(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// Addrs implements Interface.
func (h *Handle) Addrs(index int) ([]netip.Prefix, error) {
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	as, err := retryDump(fmt.Sprintf("addresses of link #%d", index), func() ([]netlink.Addr, error) {
		return h.h.AddrList(link, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(as))
	for _, a := range as {
		if p, ok := prefixFrom(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// AddAddr implements Interface.
func (h *Handle) AddAddr(index int, p netip.Prefix) error {
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	if err := h.h.AddrAdd(link, &netlink.Addr{IPNet: ipnet(p)}); err != nil {
		return fmt.Errorf("adding address %s to link #%d: %w", p, index, noLink(err))
	}
	return nil
}

// DeleteAddr implements Interface.
func (h *Handle) DeleteAddr(index int, p netip.Prefix) error {
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	if err := h.h.AddrDel(link, &netlink.Addr{IPNet: ipnet(p)}); err != nil {
		return fmt.Errorf("deleting address %s from link #%d: %w", p, index, wrapNotFound(err))
	}
	return nil
}

// Neighs implements Interface: the link's IPv4 (ARP) and IPv6 (NDP)
// neighbours.
func (h *Handle) Neighs(index int) ([]Neigh, error) {
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := retryDump(fmt.Sprintf("neighbours of link #%d", index), func() ([]netlink.Neigh, error) {
			return h.h.NeighList(index, fam)
		})
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			if n.LinkIndex != index {
				continue
			}
			out = append(out, fromNetlinkNeigh(n))
		}
	}
	return out, nil
}

// family returns the netlink address family of a.
func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func fromNetlinkNeigh(n netlink.Neigh) Neigh {
	m, _ := MACFrom(n.HardwareAddr)
	return Neigh{LinkIndex: n.LinkIndex, IP: addrFrom(n.IP), MAC: m, Permanent: n.State&netlink.NUD_PERMANENT != 0}
}

// SetNeigh implements Interface.
func (h *Handle) SetNeigh(n Neigh) error { return h.apply1(Op{Kind: OpSetNeigh, Neigh: n}) }

// DeleteNeigh implements Interface.
func (h *Handle) DeleteNeigh(n Neigh) error { return h.apply1(Op{Kind: OpDeleteNeigh, Neigh: n}) }

// FDBs implements Interface.
func (h *Handle) FDBs(index int) ([]FDB, error) {
	ns, err := retryDump(fmt.Sprintf("FDB entries of link #%d", index), func() ([]netlink.Neigh, error) {
		return h.h.NeighList(index, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, err
	}
	out := make([]FDB, 0, len(ns))
	for _, n := range ns {
		if f, ok := fromNetlinkFDB(n); ok && f.LinkIndex == index {
			out = append(out, f)
		}
	}
	return out, nil
}

func fromNetlinkFDB(n netlink.Neigh) (FDB, bool) {
	m, ok := MACFrom(n.HardwareAddr)
	dst := addrFrom(n.IP)
	if !ok || !dst.IsValid() {
		return FDB{}, false
	}
	return FDB{LinkIndex: n.LinkIndex, MAC: m, Dst: dst}, true
}

// SetFDB implements Interface.
func (h *Handle) SetFDB(f FDB) error { return h.apply1(Op{Kind: OpSetFDB, FDB: f}) }

// DeleteFDB implements Interface.
func (h *Handle) DeleteFDB(f FDB) error { return h.apply1(Op{Kind: OpDeleteFDB, FDB: f}) }

// Routes implements Interface.
func (h *Handle) Routes(table, index int) ([]Route, error) {
	if table == 0 {
		table = MainTable
	}
	filter := &netlink.Route{Table: table, LinkIndex: index}
	mask := netlink.RT_FILTER_TABLE
	if index != 0 {
		mask |= netlink.RT_FILTER_OIF
	}
	var out []Route
	what := fmt.Sprintf("routes of table %d", table)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		n := len(out)
		_, err := retryDump(what, func() ([]struct{}, error) {
			out = out[:n]
			return nil, h.h.RouteListFilteredIter(fam, filter, mask, func(r netlink.Route) bool {
				if rt, ok := fromNetlinkRoute(r); ok {
					out = append(out, rt)
				}
				return true
			})
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func fromNetlinkRoute(r netlink.Route) (Route, bool) {
	if r.Type != unix.RTN_UNICAST || r.Dst == nil || len(r.MultiPath) > 0 {
		return Route{}, false
	}
	dst, ok := prefixFrom(r.Dst)
	if !ok {
		return Route{}, false
	}
	return Route{Table: r.Table, Dst: dst, Gw: addrFrom(r.Gw), LinkIndex: r.LinkIndex, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}, true
}

// ReplaceRoute implements Interface.
func (h *Handle) ReplaceRoute(r Route) error { return h.apply1(Op{Kind: OpReplaceRoute, Route: r}) }

// DeleteRoute implements Interface.
func (h *Handle) DeleteRoute(r Route) error { return h.apply1(Op{Kind: OpDeleteRoute, Route: r}) }

// Apply implements Interface: the ops go to the kernel in batches of
// writeBatch requests per message.
func (h *Handle) Apply(ops []Op) []OpError { return h.w.apply(h.ns, ops) }

func (h *Handle) apply1(op Op) error {
	if errs := h.w.apply(h.ns, []Op{op}); len(errs) > 0 {
		return errs[0].Err
	}
	return nil
}

// subscribeBuffer is the receive buffer asked for on event sockets, so that
// programming thousands of entries does not overrun them.
const subscribeBuffer = 8 << 20

// Subscribe implements Interface.
func (h *Handle) Subscribe(ctx context.Context) (<-chan Update, error) {
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	out := make(chan Update, 256)
	var lostMu sync.Mutex
	var lost []error
	onErr := func(err error) {
		lostMu.Lock()
		lost = append(lost, err)
		lostMu.Unlock()
	}
	ns := h.ns
	fail := func(what string, err error) (<-chan Update, error) {
		close(done)
		return nil, fmt.Errorf("subscribing to %s updates: %w", what, err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: subscribeBuffer, ReceiveBufferForceSize: true}); err != nil {
		return fail("link", err)
	}
	// Neighbours, FDB entries and routes: subscribe_linux.go.
	entries, err := h.subscribeEntries(done, onErr)
	if err != nil {
		return fail("neighbour and route", err)
	}
	go func() {
		defer close(out)
		stop := ctx.Done()
		var ended error
		// end stops every subscription; the loop then drains the library's
		// channels until they are closed.
		end := func(err error) {
			if stop != nil {
				ended = err
				close(done)
				stop = nil
			}
		}
		for links != nil || entries != nil {
			var u Update
			var ok bool
			select {
			case <-stop:
				end(nil)
				continue
			case lu, more := <-links:
				if !more {
					links = nil
					end(errors.New("link subscription ended"))
					continue
				}
				u = Update{Kind: LinkUpdate, Deleted: lu.Header.Type == unix.RTM_DELLINK, Link: fromNetlinkLink(lu.Link)}
				ok = true
			case eu, more := <-entries:
				if !more {
					entries = nil
					end(errors.New("neighbour and route subscription ended"))
					continue
				}
				u, ok = eu, true
			}
			if stop == nil {
				continue
			}
			lostMu.Lock()
			errs := lost
			lost = nil
			lostMu.Unlock()
			if len(errs) > 0 {
				send(out, Update{Kind: LostUpdates, Err: errors.Join(errs...)}, stop)
			}
			if ok {
				send(out, u, stop)
			}
		}
		if ended != nil {
			lostMu.Lock()
			err := errors.Join(append(lost, ended)...)
			lostMu.Unlock()
			// The subscription is over: the receiver learns that updates
			// were lost, then sees the channel closed and may subscribe again.
			send(out, Update{Kind: LostUpdates, Err: err}, ctx.Done())
		}
	}()
	return out, nil
}

func send(out chan<- Update, u Update, stop <-chan struct{}) {
	select {
	case out <- u:
	case <-stop:
	}
}

// IsExist reports whether err says that an entry already exists.
func IsExist(err error) bool { return errors.Is(err, syscall.EEXIST) }
