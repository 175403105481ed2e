package wg

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunClone is the TUN clone device.
const tunClone = "/dev/net/tun"

// openPersistentTUN attaches to the TUN device name, creating it if it does
// not exist, and marks it persistent, so that it (with its addresses and
// routes) outlives this process: a restarted agent attaches to it again. The
// flags are wireguard-go's own (no packet information, virtio-net headers
// for segmentation offload), so its batching works as on a TUN it made.
func openPersistentTUN(name string, mtu int) (tun.Device, error) {
	fd, err := unix.Open(tunClone, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("opening %s for the WireGuard TUN device %s: %w (load the tun module; in a container, mount the host's /dev/net/tun)", tunClone, name, err)
		}
		return nil, fmt.Errorf("opening %s for the WireGuard TUN device %s: %w", tunClone, name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attaching to TUN device %s (TUNSETIFF): %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("making TUN device %s persistent (TUNSETPERSIST): %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device %s: %w", name, err)
	}
	// wireguard-go takes the file over (and closes it on Close).
	f := os.NewFile(uintptr(fd), tunClone)
	dev, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("starting wireguard-go's TUN on %s: %w", name, err)
	}
	return dev, nil
}
