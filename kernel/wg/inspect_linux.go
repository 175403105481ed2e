package wg

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// ErrNoDevice is wrapped by Inspect's error when the device does not
// exist.
var ErrNoDevice = errors.New("no such WireGuard device")

// Inspect reads the peers of the device name, changing nothing, from
// another process than the agent's (`weft doctor`): a kernel WireGuard
// link through wgctrl, the userspace engine's TUN through the agent's UAPI
// socket in socketDir. It says which engine serves the device.
func Inspect(name, socketDir string) (Kind, []Peer, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "", nil, fmt.Errorf("%w: %s", ErrNoDevice, name)
		}
		return "", nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	switch l.Type() {
	case "wireguard":
		c, err := wgctrl.New()
		if err != nil {
			return Kernel, nil, fmt.Errorf("opening the WireGuard control client: %w", err)
		}
		defer c.Close()
		peers, err := (&kernelEngine{name: name, c: c}).Peers()
		return Kernel, peers, err
	case "tuntap", "tun":
		peers, err := uapiPeers(filepath.Join(socketDir, name+".sock"))
		return Userspace, peers, err
	}
	return "", nil, fmt.Errorf("%s is a %s link, not a WireGuard device", name, l.Type())
}

// uapiPeers asks a userspace engine's UAPI socket for its peers.
func uapiPeers(sock string) ([]Peer, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil, fmt.Errorf("the userspace engine's UAPI socket (is weftd running? is %s its WEFT_WIREGUARD_SOCKET_DIR?): %w", filepath.Dir(sock), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return nil, fmt.Errorf("UAPI socket %s: %w", sock, err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "errno="); ok {
			if v != "0" {
				return nil, fmt.Errorf("UAPI socket %s: errno %s", sock, v)
			}
			return parseGet(b.String())
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return nil, fmt.Errorf("UAPI socket %s: the answer ended early: %v", sock, sc.Err())
}
