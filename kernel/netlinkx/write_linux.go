package netlinkx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The writes of neighbours, FDB entries and routes go through a writer of
// Handle's own rather than one library request each. A library request is
// a sendmsg and a recvmsg of its acknowledgement (and a 64 KiB receive
// buffer cleared on the stack); the writer puts up to writeBatch requests
// in one sendmsg, asks an acknowledgement of the last one only, and reads
// the answers with one recvmsg, since the kernel handles the requests of
// one message in order before sendmsg returns, and answers a request
// without NLM_F_ACK only when it fails. The requests are those the library
// sends for NeighSet, NeighDel, RouteReplace and RouteDel, attribute for
// attribute, so the kernel objects are the same (the contract test compares
// both).

// writeBatch is the most requests sent in one sendmsg: about 8 KiB of
// requests, and at most as many error answers queued on the socket, far
// below its receive buffer (writeRcvBuf).
const writeBatch = 128

// writeRcvBuf is the receive buffer asked for the writer's socket, so that
// the answers of a batch whose every request failed are never dropped.
const writeRcvBuf = 1 << 20

// writeTimeout is how long the writer waits for the kernel's answer to a
// batch before it reports every request of it as failed.
const writeTimeout = 30 * time.Second

// nlaAlign rounds n up to the 4-byte alignment of netlink messages and
// attributes.
func nlaAlign(n int) int { return (n + 3) &^ 3 }

// writer is a NETLINK_ROUTE socket in the Handle's namespace for writes.
type writer struct {
	mu   sync.Mutex
	sock *nl.NetlinkSocket // nil until first used; then kept, for its port id
	seq  uint32
	out  []byte
	in   []byte
}

// open returns the writer's socket, opening it in namespace ns at first use.
func (w *writer) open(ns netns.NsHandle) (int, error) {
	if w.sock != nil {
		return w.sock.GetFd(), nil
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("opening a netlink socket for writes: %w", err)
	}
	fd := s.GetFd()
	for _, o := range []struct {
		level, opt, v int
	}{
		{unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1}, // answers carry the request's header, not all of it
		{unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1}, // and the kernel's message on failure
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, writeRcvBuf},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil && o.opt != unix.SO_RCVBUFFORCE {
			s.Close()
			return -1, fmt.Errorf("setting option %d of the netlink write socket: %w", o.opt, err)
		}
	}
	w.sock = s
	if w.in == nil {
		w.in = make([]byte, 64<<10)
	}
	return fd, nil
}

// pid returns the port id of the writer's socket, opening it if need be:
// the kernel stamps the notifications of the writer's changes with it.
func (w *writer) pid(ns netns.NsHandle) (uint32, error) {
	if _, err := w.open(ns); err != nil {
		return 0, err
	}
	pid, err := w.sock.GetPid()
	if err != nil {
		return 0, fmt.Errorf("reading the port id of the netlink write socket: %w", err)
	}
	return pid, nil
}

// drop closes the socket (Handle.Close).
func (w *writer) drop() {
	if w.sock != nil {
		w.sock.Close()
		w.sock = nil
	}
}

// apply writes ops in batches and returns the failures, each wrapped as the
// single call wraps it.
func (w *writer) apply(ns netns.NsHandle, ops []Op) []OpError {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []OpError
	for start := 0; start < len(ops); start += writeBatch {
		batch := ops[start:min(start+writeBatch, len(ops))]
		for i, err := range w.batch(ns, batch) {
			if err != nil {
				errs = append(errs, OpError{Index: start + i, Err: wrapOp(batch[i], err)})
			}
		}
	}
	return errs
}

// batch sends one batch and returns one error per op (nil: written), or nil
// when all were.
func (w *writer) batch(ns netns.NsHandle, ops []Op) []error {
	fail := func(err error) []error {
		errs := make([]error, len(ops))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	fd, err := w.open(ns)
	if err != nil {
		return fail(err)
	}
	if w.seq > math.MaxUint32-writeBatch {
		w.seq = 0 // the sequence numbers of one batch never wrap
	}
	first := w.seq + 1
	w.out = w.out[:0]
	for i, op := range ops {
		w.seq++
		flags := uint16(unix.NLM_F_REQUEST)
		if i == len(ops)-1 {
			flags |= unix.NLM_F_ACK
		}
		var err error
		if w.out, err = appendOp(w.out, op, flags, w.seq); err != nil {
			// Nothing was sent; the batch is refused as a whole, which
			// only a caller's bug (an address of no family) can cause.
			w.seq = first - 1
			return fail(err)
		}
	}
	if err := unix.Sendto(fd, w.out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("sending %d netlink requests: %w", len(ops), err))
	}
	var errs []error
	last := w.seq
	deadline := time.Now().Add(writeTimeout)
	for {
		n, _, err := unix.Recvfrom(fd, w.in, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if err := waitReadable(fd, deadline); err != nil {
				// A late answer is told from the next batch's by its
				// sequence number.
				return fail(err)
			}
			continue
		}
		if err != nil {
			// ENOBUFS: answers were dropped, which ones is unknown.
			return fail(fmt.Errorf("reading the kernel's answers to %d netlink requests: %w", len(ops), err))
		}
		msgs, err := syscall.ParseNetlinkMessage(w.in[:n])
		if err != nil {
			return fail(fmt.Errorf("parsing the kernel's answers to %d netlink requests: %w", len(ops), err))
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if m.Header.Type != unix.NLMSG_ERROR || seq < first || seq > last {
				continue // not an answer to this batch
			}
			if e := answerErr(m); e != nil {
				if errs == nil {
					errs = make([]error, len(ops))
				}
				errs[seq-first] = e
			}
			if seq == last {
				return errs
			}
		}
	}
}

// waitReadable waits until fd has data or the deadline passes.
func waitReadable(fd int, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no answer from the kernel to netlink requests within %s", writeTimeout)
		}
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("waiting for the kernel's answer to netlink requests: %w", err)
		}
	}
}

// answerErr returns the error an NLMSG_ERROR answer carries (nil: an
// acknowledgement), with the kernel's message when it gave one.
func answerErr(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return errors.New("short netlink error answer")
	}
	code := int32(binary.NativeEndian.Uint32(m.Data))
	if code == 0 {
		return nil
	}
	err := error(syscall.Errno(-code))
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return err
	}
	// The echoed request (its header only: NETLINK_CAP_ACK), then the
	// extended acknowledgement's attributes.
	rest := m.Data[4:]
	echoed := int(binary.NativeEndian.Uint32(rest))
	if m.Header.Flags&unix.NLM_F_CAPPED != 0 {
		echoed = unix.SizeofNlMsghdr
	}
	if nlaAlign(echoed) > len(rest) {
		return err
	}
	msg := ""
	attrs(rest[nlaAlign(echoed):], func(typ uint16, v []byte) {
		if typ == nl.NLMSGERR_ATTR_MSG {
			msg = unix.ByteSliceToString(v)
		}
	})
	if msg != "" {
		return fmt.Errorf("%w: %s", err, msg)
	}
	return err
}

// wrapOp wraps err as the single call of op's kind does.
func wrapOp(op Op, err error) error {
	switch op.Kind {
	case OpSetNeigh:
		n := op.Neigh
		return fmt.Errorf("setting neighbour %s lladdr %s on link #%d: %w", n.IP, n.MAC, n.LinkIndex, noLink(err))
	case OpDeleteNeigh:
		n := op.Neigh
		return fmt.Errorf("deleting neighbour %s on link #%d: %w", n.IP, n.LinkIndex, wrapNotFound(err))
	case OpSetFDB:
		f := op.FDB
		return fmt.Errorf("setting FDB entry %s dst %s on link #%d: %w", f.MAC, f.Dst, f.LinkIndex, noLink(err))
	case OpDeleteFDB:
		f := op.FDB
		return fmt.Errorf("deleting FDB entry %s dst %s on link #%d: %w", f.MAC, f.Dst, f.LinkIndex, wrapNotFound(err))
	case OpReplaceRoute:
		return fmt.Errorf("replacing route %s: %w", op.Route, noLink(err))
	case OpDeleteRoute:
		return fmt.Errorf("deleting route %s: %w", op.Route, wrapNotFound(err))
	}
	return err
}

// appendOp appends the netlink request for op to b.
func appendOp(b []byte, op Op, flags uint16, seq uint32) ([]byte, error) {
	switch op.Kind {
	case OpSetNeigh, OpDeleteNeigh:
		n := op.Neigh
		if !n.IP.IsValid() {
			return b, fmt.Errorf("neighbour on link #%d without an address", n.LinkIndex)
		}
		if op.Kind == OpSetNeigh {
			return appendNeigh(b, unix.RTM_NEWNEIGH, flags|unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq,
				uint8(family(n.IP)), n.LinkIndex, unix.NUD_PERMANENT, 0, unix.RTN_UNICAST, n.IP.AsSlice(), n.MAC[:]), nil
		}
		return appendNeigh(b, unix.RTM_DELNEIGH, flags, seq, uint8(family(n.IP)), n.LinkIndex, 0, 0, 0, n.IP.AsSlice(), nil), nil
	case OpSetFDB, OpDeleteFDB:
		f := op.FDB
		if !f.Dst.IsValid() {
			return b, fmt.Errorf("FDB entry %s on link #%d without a destination", f.MAC, f.LinkIndex)
		}
		typ, fl := uint16(unix.RTM_DELNEIGH), flags
		if op.Kind == OpSetFDB {
			typ, fl = unix.RTM_NEWNEIGH, flags|unix.NLM_F_CREATE|unix.NLM_F_REPLACE
		}
		return appendNeigh(b, typ, fl, seq, unix.AF_BRIDGE, f.LinkIndex, unix.NUD_PERMANENT, unix.NTF_SELF, 0, f.Dst.AsSlice(), f.MAC[:]), nil
	case OpReplaceRoute, OpDeleteRoute:
		return appendRoute(b, op.Kind == OpReplaceRoute, flags, seq, op.Route)
	}
	return b, fmt.Errorf("netlink write of unknown kind %d", op.Kind)
}

// appendHeader appends a netlink header whose length appendDone fills in.
func appendHeader(b []byte, typ, flags uint16, seq uint32) ([]byte, int) {
	at := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return b, at
}

func appendDone(b []byte, at int) []byte {
	binary.NativeEndian.PutUint32(b[at:], uint32(len(b)-at))
	return b
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendNeigh appends an ndmsg request with NDA_DST and, if lladdr is not
// nil, NDA_LLADDR: what the library's neighHandle sends.
func appendNeigh(b []byte, typ, flags uint16, seq uint32, fam uint8, link int, state uint16, ntf, rtn uint8, dst, lladdr []byte) []byte {
	b, at := appendHeader(b, typ, flags, seq)
	b = append(b, fam, 0, 0, 0)
	b = binary.NativeEndian.AppendUint32(b, uint32(link))
	b = binary.NativeEndian.AppendUint16(b, state)
	b = append(b, ntf, rtn)
	b = appendAttr(b, unix.NDA_DST, dst)
	if lladdr != nil {
		b = appendAttr(b, unix.NDA_LLADDR, lladdr)
	}
	return appendDone(b, at)
}

// appendRoute appends an rtmsg request for r: what the library's
// RouteReplace (add) or RouteDel sends for r: protocol boot on an add, scope link
// for a route without a gateway, the onlink flag, RTA_OIF always.
func appendRoute(b []byte, add bool, flags uint16, seq uint32, r Route) ([]byte, error) {
	if !r.Dst.IsValid() {
		return b, fmt.Errorf("route without a destination on link #%d", r.LinkIndex)
	}
	if r.Gw.IsValid() && r.Gw.Is4() != r.Dst.Addr().Is4() {
		return b, fmt.Errorf("route %s: gateway and destination are not of one address family", r)
	}
	typ, proto := uint16(unix.RTM_DELROUTE), uint8(0)
	if add {
		typ, proto, flags = unix.RTM_NEWROUTE, unix.RTPROT_BOOT, flags|unix.NLM_F_CREATE|unix.NLM_F_REPLACE
	}
	scope := uint8(unix.RT_SCOPE_UNIVERSE)
	if !r.Gw.IsValid() {
		scope = unix.RT_SCOPE_LINK
	}
	table := r.table()
	var rtmFlags uint32
	if r.OnLink {
		rtmFlags = unix.RTNH_F_ONLINK
	}
	b, at := appendHeader(b, typ, flags, seq)
	b = append(b, uint8(family(r.Dst.Addr())), uint8(r.Dst.Bits()), 0, 0)
	tb := uint8(table)
	if table >= 256 {
		tb = unix.RT_TABLE_UNSPEC
	}
	b = append(b, tb, proto, scope, unix.RTN_UNICAST)
	b = binary.NativeEndian.AppendUint32(b, rtmFlags)
	b = appendAttr(b, unix.RTA_DST, r.Dst.Addr().AsSlice())
	if r.Gw.IsValid() {
		b = appendAttr(b, unix.RTA_GATEWAY, r.Gw.AsSlice())
	}
	if table >= 256 {
		b = appendAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, uint32(table)))
	}
	b = appendAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(r.LinkIndex)))
	return appendDone(b, at), nil
}
