package netlinkx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Neighbour, FDB and route notifications come from one socket of the
// Handle's own, joined to the neighbour and IPv4 and IPv6 route groups. It
// carries a socket filter that drops, in the kernel, the notifications of
// the Handle's own neighbour and route writes: the kernel stamps those with
// the port id of the socket that asked for the change (the writer's), while
// changes made by anyone else carry theirs, and the kernel's own carry 0.
// The programmer recognised those echoes and ignored them anyway; reading
// and parsing one per entry written cost the agent as much CPU as building
// the requests. (The VXLAN driver stamps its FDB notifications with 0, so
// they still arrive.)

// entryGroups are the multicast groups of the entry socket.
var entryGroups = []uint{unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}

// echoFilter returns a classic BPF program that drops netlink messages
// whose nlmsg_pid is pid and accepts all others.
func echoFilter(pid uint32) []unix.SockFilter {
	// BPF loads words in network byte order; nlmsg_pid is in the host's.
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], pid)
	k := binary.BigEndian.Uint32(b[:])
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}, // A = nlmsg_pid
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: k},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // an echo: drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // anything else: keep
	}
}

// subscribeEntries opens the entry socket and sends its updates on the
// returned channel until done is closed or the socket fails (then onErr is
// called, and the channel closed).
func (h *Handle) subscribeEntries(done <-chan struct{}, onErr func(error)) (<-chan Update, error) {
	h.w.mu.Lock()
	pid, err := h.w.pid(h.ns)
	h.w.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s, err := nl.SubscribeAt(h.ns, netns.None(), unix.NETLINK_ROUTE, entryGroups...)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket for neighbour and route updates: %w", err)
	}
	// The library's socket reads into a fresh 64 KiB buffer per message;
	// the reader below keeps one. It takes a duplicate of the descriptor.
	fd, err := unix.FcntlInt(uintptr(s.GetFd()), unix.F_DUPFD_CLOEXEC, 0)
	s.Close()
	if err != nil {
		return nil, fmt.Errorf("duplicating the netlink update socket: %w", err)
	}
	prog := echoFilter(pid)
	for _, set := range []func() error{
		func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, subscribeBuffer) },
		func() error {
			return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
		},
		func() error { return unix.SetNonblock(fd, true) },
	} {
		if err := set(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("setting up the netlink update socket: %w", err)
		}
	}
	f := os.NewFile(uintptr(fd), "netlink-updates")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink update socket: %w", err)
	}
	out := make(chan Update, 256)
	stop := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-stop:
		}
		f.Close() // ends a blocked read
	}()
	go func() {
		defer close(out)
		defer close(stop)
		buf := make([]byte, 64<<10)
		for {
			var n int
			var from unix.Sockaddr
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
				return !errors.Is(rerr, unix.EAGAIN)
			})
			if err == nil {
				err = rerr
			}
			if err != nil {
				select {
				case <-done:
				default:
					// ENOBUFS: the socket overran and updates were lost.
					onErr(fmt.Errorf("reading neighbour and route updates: %w", err))
				}
				return
			}
			if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
				continue // not from the kernel: no update, whatever it says
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				onErr(fmt.Errorf("parsing neighbour and route updates: %w", err))
				continue
			}
			for _, m := range msgs {
				u, ok := parseEntryUpdate(m)
				if !ok {
					continue
				}
				select {
				case out <- u:
				case <-done:
					return
				}
			}
		}
	}()
	return out, nil
}

// parseEntryUpdate turns one notification into an Update: a neighbour, an
// FDB entry, or a unicast route with one next hop. ok is false for
// anything else.
func parseEntryUpdate(m syscall.NetlinkMessage) (Update, bool) {
	switch m.Header.Type {
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		return parseNeighUpdate(m.Header.Type == unix.RTM_DELNEIGH, m.Data)
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		r, ok := parseRoute(m.Data)
		return Update{Kind: RouteUpdate, Deleted: m.Header.Type == unix.RTM_DELROUTE, Route: r}, ok
	}
	return Update{}, false
}

// attrs calls f with the type and value of each attribute in b.
func attrs(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:])&^unix.NLA_F_NESTED, b[unix.SizeofRtAttr:l])
		b = b[min(nlaAlign(l), len(b)):]
	}
}

func parseNeighUpdate(deleted bool, b []byte) (Update, bool) {
	const ndmsgLen = 12
	if len(b) < ndmsgLen {
		return Update{}, false
	}
	fam, link := b[0], int(int32(binary.NativeEndian.Uint32(b[4:])))
	state := binary.NativeEndian.Uint16(b[8:])
	var dst netip.Addr
	var lladdr []byte
	attrs(b[ndmsgLen:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NDA_DST:
			dst, _ = netip.AddrFromSlice(v)
			dst = dst.Unmap()
		case unix.NDA_LLADDR:
			lladdr = v
		}
	})
	mac, macOK := MACFrom(lladdr)
	switch fam {
	case unix.AF_BRIDGE:
		if !macOK || !dst.IsValid() {
			return Update{}, false
		}
		return Update{Kind: FDBUpdate, Deleted: deleted, FDB: FDB{LinkIndex: link, MAC: mac, Dst: dst}}, true
	case unix.AF_INET, unix.AF_INET6:
		return Update{Kind: NeighUpdate, Deleted: deleted, Neigh: Neigh{LinkIndex: link, IP: dst, MAC: mac, Permanent: state&unix.NUD_PERMANENT != 0}}, true
	}
	return Update{}, false
}

// parseRoute reads a route message as fromNetlinkRoute reads the
// library's: unicast, with a destination and a single next hop.
func parseRoute(b []byte) (Route, bool) {
	const rtmsgLen = 12
	if len(b) < rtmsgLen {
		return Route{}, false
	}
	dstLen, table, typ := int(b[1]), int(b[4]), b[7]
	flags := binary.NativeEndian.Uint32(b[8:])
	var r Route
	var dst netip.Addr
	multipath := false
	attrs(b[rtmsgLen:], func(t uint16, v []byte) {
		switch t {
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(v)
		case unix.RTA_GATEWAY:
			r.Gw, _ = netip.AddrFromSlice(v)
			r.Gw = r.Gw.Unmap()
		case unix.RTA_OIF:
			if len(v) >= 4 {
				r.LinkIndex = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				table = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_MULTIPATH:
			multipath = true
		}
	})
	if typ != unix.RTN_UNICAST || !dst.IsValid() || multipath || dstLen > dst.BitLen() {
		return Route{}, false
	}
	r.Dst = netip.PrefixFrom(dst.Unmap(), dstLen)
	r.Table = table
	r.OnLink = flags&unix.RTNH_F_ONLINK != 0
	return r, true
}
