// Package netnstest helps tests build throw-away networks out of network
// namespaces, veth pairs and bridges. Every name carries a random per-test
// suffix, and everything a helper creates is removed by t.Cleanup, also
// when the test fails. Helpers shell out to ip(8), as an operator would;
// code under test should use its own netlink handles (see Netlink).
//
// All helpers need root; call SkipUnlessRoot first. When privileged tests
// are required (RequireEnv), helpers that cannot run fail the test instead
// of skipping it.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/nsenter"
)

// RequireEnv is the environment variable that makes privileged tests
// required: when it is "1" (scripts/test.sh sets it, as CI runs), a test
// that cannot run fails instead of skipping, so that a suite run without
// root cannot pass with half of it gone.
const RequireEnv = "WEFT_REQUIRE_PRIVILEGED"

// Required reports whether privileged tests must run (RequireEnv is "1").
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Unavailable ends a test that cannot run here, saying why: it skips it,
// or fails it when privileged tests are required (see RequireEnv).
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1: privileged tests must run, not skip)", msg, RequireEnv)
	}
	t.Skip("skipping: " + msg)
}

// RequireTool ends the test (see Unavailable) unless the command name is
// on PATH; pkg is the Debian package that has it.
func RequireTool(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Unavailable(t, "the %s tool is not installed (apt-get install %s; scripts/deps.sh installs it)", name, pkg)
	}
}

// SkipUnlessRoot ends the test (see Unavailable: it skips, or fails when
// privileged tests are required) unless it runs as root with the ip(8)
// tool.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "this test creates network namespaces and links and must run as root (e.g. sudo go test)")
	}
	RequireTool(t, "ip", "iproute2")
}

// Suffix returns n random lower-case hex digits.
func Suffix(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// LinkName returns prefix followed by a random suffix, cut to the kernel's
// 15-character limit on link names (prefix at most 9 characters).
func LinkName(prefix string) string {
	if len(prefix) > 9 {
		prefix = prefix[:9]
	}
	return prefix + Suffix(15-len(prefix))
}

// Run runs a command and returns its combined output; the error quotes the
// command and its output.
func Run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun runs a command and fails the test if it fails.
func MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// NS is a named network namespace (/var/run/netns/<Name>) created for one
// test.
type NS struct {
	// Name is the namespace's name, as in "ip netns exec <Name>".
	Name string
	// Path is its bind mount, /var/run/netns/<Name>.
	Path   string
	handle netns.NsHandle
}

// NewNS creates a namespace named "<prefix>-<random>", brings its loopback
// up, and removes it (with every link in it) when the test ends.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	name := "weft-" + prefix + "-" + Suffix(6)
	MustRun(t, "ip", "netns", "add", name)
	n := &NS{Name: name, Path: "/var/run/netns/" + name, handle: -1}
	t.Cleanup(func() {
		if n.handle >= 0 {
			n.handle.Close()
		}
		if _, err := Run("ip", "netns", "del", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	n.MustExec(t, "ip", "link", "set", "lo", "up")
	h, err := netns.GetFromPath(n.Path)
	if err != nil {
		t.Fatalf("opening namespace %s: %v", name, err)
	}
	n.handle = h
	// No duplicate address detection on the namespace's links: an IPv6
	// address is usable (not tentative) as soon as it is added.
	for _, key := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
		if err := n.WriteSysctl(key, "0"); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// Handle returns the namespace's handle; the NS keeps ownership.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle bound to the namespace, closed when the
// test ends.
func (n *NS) Netlink(t testing.TB) *netlinkx.Handle {
	t.Helper()
	h, err := netlinkx.OpenAt(n.handle)
	if err != nil {
		t.Fatalf("netlink handle for %s: %v", n.Name, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Exec runs a command inside the namespace (ip netns exec).
func (n *NS) Exec(args ...string) (string, error) {
	return Run(append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// MustExec runs a command inside the namespace and fails the test if it
// fails.
func (n *NS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Ping sends one ICMP echo from inside the namespace to addr, waiting at
// most a second, and returns nil if it was answered.
func (n *NS) Ping(addr netip.Addr) error {
	_, err := n.Exec("ping", "-n", "-c1", "-W1", addr.String())
	return err
}

// PingWithin pings addr once a second until it answers or d has passed:
// the first echo of a fresh link waits on neighbour resolution, which lags
// on a loaded machine. It returns the last failure.
func (n *NS) PingWithin(addr netip.Addr, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := n.Ping(addr)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// Do runs fn on a locked OS thread switched into the namespace, then
// switches back (see nsenter.Do).
func (n *NS) Do(fn func() error) error { return nsenter.Do(n.handle, n.Name, fn) }

// Switch is a bridge that joins test hosts: a bridge named "br0" inside a
// namespace of its own, so that nothing touches the root namespace.
type Switch struct {
	NS    *NS
	ports int
}

// NewSwitch creates a switch namespace holding an up bridge "br0".
func NewSwitch(t testing.TB) *Switch {
	t.Helper()
	ns := NewNS(t, "sw")
	ns.MustExec(t, "ip", "link", "add", "br0", "type", "bridge")
	ns.MustExec(t, "ip", "link", "set", "br0", "up")
	return &Switch{NS: ns}
}

// Join plugs host into the switch with a veth pair: ifname (e.g. "eth0")
// inside host, holding addr, up; its peer a port of br0. It returns ifname.
func (s *Switch) Join(t testing.TB, host *NS, ifname string, addr netip.Prefix) string {
	t.Helper()
	s.ports++
	port := fmt.Sprintf("p%d", s.ports)
	tmp := LinkName("wt")
	// Create the pair inside the switch, then move one end to the host.
	s.NS.MustExec(t, "ip", "link", "add", port, "type", "veth", "peer", "name", tmp)
	s.NS.MustExec(t, "ip", "link", "set", tmp, "netns", host.Name)
	s.NS.MustExec(t, "ip", "link", "set", port, "master", "br0", "up")
	host.MustExec(t, "ip", "link", "set", tmp, "name", ifname)
	if addr.IsValid() {
		host.MustExec(t, "ip", "addr", "add", addr.String(), "dev", ifname)
	}
	host.MustExec(t, "ip", "link", "set", ifname, "up")
	return ifname
}

// Bridge is a bridge in the root namespace with a random name.
type Bridge struct {
	Name string
}

// NewBridge creates an up bridge "wbr<random>" in the root namespace and
// deletes it when the test ends.
func NewBridge(t testing.TB) *Bridge {
	t.Helper()
	name := LinkName("wbr")
	MustRun(t, "ip", "link", "add", name, "type", "bridge")
	t.Cleanup(func() {
		if _, err := Run("ip", "link", "del", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	MustRun(t, "ip", "link", "set", name, "up")
	return &Bridge{Name: name}
}

// Join plugs host into the root-namespace bridge, as Switch.Join does.
func (b *Bridge) Join(t testing.TB, host *NS, ifname string, addr netip.Prefix) string {
	t.Helper()
	port := LinkName("wp")
	tmp := LinkName("wt")
	MustRun(t, "ip", "link", "add", port, "type", "veth", "peer", "name", tmp)
	t.Cleanup(func() {
		// Deleting either end removes the pair; it may be gone already
		// with the host namespace.
		_, _ = Run("ip", "link", "del", port)
	})
	MustRun(t, "ip", "link", "set", tmp, "netns", host.Name)
	MustRun(t, "ip", "link", "set", port, "master", b.Name, "up")
	host.MustExec(t, "ip", "link", "set", tmp, "name", ifname)
	if addr.IsValid() {
		host.MustExec(t, "ip", "addr", "add", addr.String(), "dev", ifname)
	}
	host.MustExec(t, "ip", "link", "set", ifname, "up")
	return ifname
}

// NewVeth creates a veth pair between two namespaces: aName in a, bName in
// b, both up, with the given addresses (zero: none). The pair disappears
// with either namespace.
func NewVeth(t testing.TB, a *NS, aName string, aAddr netip.Prefix, b *NS, bName string, bAddr netip.Prefix) {
	t.Helper()
	tmp := LinkName("wt")
	a.MustExec(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", tmp)
	a.MustExec(t, "ip", "link", "set", tmp, "netns", b.Name)
	b.MustExec(t, "ip", "link", "set", tmp, "name", bName)
	for _, e := range []struct {
		ns   *NS
		name string
		addr netip.Prefix
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if e.addr.IsValid() {
			e.ns.MustExec(t, "ip", "addr", "add", e.addr.String(), "dev", e.name)
		}
		e.ns.MustExec(t, "ip", "link", "set", e.name, "up")
	}
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the namespace
// (off by default in a new namespace). It writes /proc/sys from a thread
// inside the namespace (the file belongs to the namespace of the thread
// that opens it), so it needs no sysctl(8).
func (n *NS) EnableForwarding(t testing.TB) {
	t.Helper()
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := n.WriteSysctl(key, "1"); err != nil {
			t.Fatal(err)
		}
	}
}

// AddAddr adds addr to the link ifname in the namespace (an IPv6 address
// is usable at once: NewNS turned duplicate address detection off).
func (n *NS) AddAddr(t testing.TB, ifname string, addr netip.Prefix) {
	t.Helper()
	n.MustExec(t, "ip", "addr", "add", addr.String(), "dev", ifname)
}

// WaitAddrsSettled waits until no IPv6 address in the namespace is
// tentative. Even without duplicate address detection an address stays
// tentative until its link has carrier, and the kernel reports carrier of
// a new veth up to a second late (linkwatch), later on a loaded machine.
func (n *NS) WaitAddrsSettled(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.Exec("ip", "-6", "-o", "addr", "show", "tentative")
		if err == nil && strings.TrimSpace(out) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("IPv6 addresses in %s still tentative after 10 s: %s %v", n.Name, out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WriteSysctl writes value to /proc/sys/<key> (e.g. "net/ipv4/ip_forward")
// inside the namespace.
func (n *NS) WriteSysctl(key, value string) error {
	path := "/proc/sys/" + key
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
			return fmt.Errorf("setting %s to %s in namespace %s: %w", path, value, n.Name, err)
		}
		return nil
	})
}

// ReadSysctl returns the trimmed content of /proc/sys/<key> inside the
// namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	path := "/proc/sys/" + key
	var out string
	err := n.Do(func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s in namespace %s: %w", path, n.Name, err)
		}
		out = strings.TrimSpace(string(b))
		return nil
	})
	return out, err
}

// NewPod creates a "pod" namespace behind host: a veth pair with hostIf in
// host holding gw (e.g. 10.244.1.1/24) and "eth0" in the pod holding addr
// (e.g. 10.244.1.2/24), a default route in the pod via gw, and forwarding
// on in host. It returns the pod namespace.
func NewPod(t testing.TB, host *NS, hostIf string, gw, addr netip.Prefix) *NS {
	t.Helper()
	pod := NewNS(t, "pod")
	NewVeth(t, host, hostIf, gw, pod, "eth0", addr)
	pod.MustExec(t, "ip", "route", "add", "default", "via", gw.Addr().String())
	host.EnableForwarding(t)
	return pod
}

// SourceSeen opens a TCP listener on addr inside dst, connects to it from
// inside src, and returns the source address of the connection as dst saw
// it: where a masquerade applies on the way, the masquerading host's
// address. It fails when no connection is made within timeout.
func SourceSeen(src, dst *NS, addr netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	var ln net.Listener
	if err := dst.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		return netip.Addr{}, fmt.Errorf("listening on %s in %s: %w", addr, dst.Name, err)
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			seen <- ta.AddrPort().Addr().Unmap()
		}
	}()
	var conn net.Conn
	if err := src.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		conn, err = d.Dial("tcp", addr.String())
		return err
	}); err != nil {
		return netip.Addr{}, fmt.Errorf("connecting from %s to %s in %s: %w", src.Name, addr, dst.Name, err)
	}
	defer conn.Close()
	select {
	case a := <-seen:
		return a, nil
	case <-time.After(timeout):
		return netip.Addr{}, fmt.Errorf("%s accepted no connection from %s within %v", dst.Name, src.Name, timeout)
	}
}
