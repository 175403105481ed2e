package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records every frame that crosses one link of a test namespace,
// through an AF_PACKET socket opened inside it (no tcpdump needed).
type Capture struct {
	fd     int
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	frames [][]byte
	err    error
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Capture starts recording the frames of link ifname in n, in both
// directions, until Stop (or the end of the test).
func (n *NS) Capture(t testing.TB, ifname string) *Capture {
	t.Helper()
	c := &Capture{stop: make(chan struct{}), done: make(chan struct{})}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding to %s: %w", ifname, err)
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capturing on %s in %s: %v", ifname, n.Name, err)
	}
	go c.loop()
	t.Cleanup(func() { c.Stop() })
	return c
}

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		f := make([]byte, n)
		copy(f, buf[:n])
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns the frames seen (Ethernet frames, as
// received or sent on the link) and any read error. It may be called again.
func (c *Capture) Stop() ([][]byte, error) {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.err
}

// IPv4 is the summary of an IP frame (IPv4, or IPv6 from ParseIP).
type IPv4 struct {
	Src, Dst netip.Addr
	// Proto is the IP protocol (unix.IPPROTO_UDP, ...).
	Proto int
	// SrcPort and DstPort are set for UDP and TCP.
	SrcPort, DstPort int
}

// ParseIPv4 decodes the IPv4 header (and UDP or TCP ports) of an Ethernet
// frame; ok is false for anything else (ARP, IPv6, short frames).
func ParseIPv4(frame []byte) (p IPv4, ok bool) {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return p, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return p, false
	}
	p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
	p.Proto = int(ip[9])
	if (p.Proto == unix.IPPROTO_UDP || p.Proto == unix.IPPROTO_TCP) && len(ip) >= ihl+4 {
		p.SrcPort = int(binary.BigEndian.Uint16(ip[ihl : ihl+2]))
		p.DstPort = int(binary.BigEndian.Uint16(ip[ihl+2 : ihl+4]))
	}
	return p, true
}

// ParseIP decodes the IPv4 or IPv6 header (and UDP or TCP ports) of an
// Ethernet frame; ok is false for anything else (ARP, short frames). For
// IPv6, Proto is the fixed header's next header: an extension header is
// reported as its own number, without ports.
func ParseIP(frame []byte) (p IPv4, ok bool) {
	if p, ok := ParseIPv4(frame); ok {
		return p, true
	}
	if len(frame) < 14+40 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 {
		return p, false
	}
	ip := frame[14:]
	if ip[0]>>4 != 6 {
		return p, false
	}
	p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	p.Proto = int(ip[6])
	if (p.Proto == unix.IPPROTO_UDP || p.Proto == unix.IPPROTO_TCP) && len(ip) >= 44 {
		p.SrcPort = int(binary.BigEndian.Uint16(ip[40:42]))
		p.DstPort = int(binary.BigEndian.Uint16(ip[42:44]))
	}
	return p, true
}

// String formats p like "udp 192.0.2.1:51820 > 192.0.2.2:51820".
func (p IPv4) String() string {
	name := map[int]string{unix.IPPROTO_UDP: "udp", unix.IPPROTO_TCP: "tcp", unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "icmpv6"}[p.Proto]
	if name == "" {
		name = fmt.Sprintf("proto %d", p.Proto)
	}
	if p.SrcPort != 0 || p.DstPort != 0 {
		src, dst := netip.AddrPortFrom(p.Src, uint16(p.SrcPort)), netip.AddrPortFrom(p.Dst, uint16(p.DstPort))
		return fmt.Sprintf("%s %s > %s", name, src, dst)
	}
	return fmt.Sprintf("%s %s > %s", name, p.Src, p.Dst)
}
