package vxlan

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/subnet"
)

// TypeName is the backend type as written in the network config and leases.
const TypeName = "vxlan"

// Defaults, as flanneld's.
const (
	DefaultVNI  = 1
	DefaultPort = 8472
	// Overhead is what VXLAN encapsulation adds to a packet (outer IPv4,
	// UDP, VXLAN and Ethernet headers): the device MTU is the underlay's
	// minus this.
	Overhead = 50
	// OverheadIPv6 is the same over an IPv6 underlay: its outer header is
	// 20 bytes longer (flanneld uses 50 here too, and pods' full-size
	// packets then do not fit the tunnel).
	OverheadIPv6 = 70
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// ErrInvalidOptions is wrapped by errors about the Backend options.
var ErrInvalidOptions = errors.New("invalid vxlan backend options")

// Options are the vxlan backend's settings, from the Backend object of the
// network config, with flannel's field names.
type Options struct {
	// VNI is the VXLAN network identifier; the device is flannel.<VNI>.
	VNI int
	// Port is the UDP port of the tunnel.
	Port int
	// GBP enables VXLAN Group Based Policy.
	GBP bool
	// MTU is the device MTU; 0 means the underlay's MTU minus Overhead.
	MTU int
	// DirectRouting routes to peers on a directly connected subnet of the
	// underlay without encapsulation.
	DirectRouting bool
}

// DeviceName returns the VXLAN device's name, flannel.<VNI>.
func (o Options) DeviceName() string { return "flannel." + strconv.Itoa(o.VNI) }

// ParseOptions parses the Backend object of the network config (raw may be
// empty). Fields other than the options (such as Type) are ignored.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := Options{VNI: DefaultVNI, Port: DefaultPort}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return o, nil
	}
	var f struct {
		VNI           *json.Number `json:"VNI"`
		Port          *json.Number `json:"Port"`
		GBP           *bool        `json:"GBP"`
		MTU           *json.Number `json:"MTU"`
		DirectRouting *bool        `json:"DirectRouting"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return o, fmt.Errorf("%w: Backend %s: %v (want e.g. {\"Type\":\"vxlan\",\"VNI\":1,\"Port\":8472})", ErrInvalidOptions, raw, err)
	}
	num := func(name string, n *json.Number, lo, hi int, def int) (int, error) {
		if n == nil {
			return def, nil
		}
		v, err := strconv.Atoi(n.String())
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%w: %s %s: want an integer from %d to %d", ErrInvalidOptions, name, n, lo, hi)
		}
		return v, nil
	}
	var err error
	if o.VNI, err = num("VNI", f.VNI, 0, maxVNI, DefaultVNI); err != nil {
		return o, err
	}
	// flanneld treats Port 0 as "the kernel default", which is 8472.
	if o.Port, err = num("Port", f.Port, 0, 65535, DefaultPort); err != nil {
		return o, err
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.MTU, err = num("MTU", f.MTU, 0, 65535, 0); err != nil {
		return o, err
	}
	if o.MTU != 0 && o.MTU < 68 {
		return o, fmt.Errorf("%w: MTU %d: want 0 (automatic) or at least 68", ErrInvalidOptions, o.MTU)
	}
	if f.GBP != nil {
		o.GBP = *f.GBP
	}
	if f.DirectRouting != nil {
		o.DirectRouting = *f.DirectRouting
	}
	if n := o.DeviceName(); len(n) > 15 {
		return o, fmt.Errorf("%w: VNI %d: device name %s is longer than the kernel's 15 characters; use a VNI below 10000000", ErrInvalidOptions, o.VNI, n)
	}
	return o, nil
}

// VtepMAC derives the VXLAN device's MAC address from the node's public
// address and the VNI: stable across restarts and reboots, distinct between
// nodes (even several on one machine), locally administered and unicast.
func VtepMAC(publicIP netip.Addr, vni int) netlinkx.MAC {
	h := sha256.New()
	h.Write([]byte("weft vxlan vtep\x00"))
	ip := publicIP.As16()
	h.Write(ip[:])
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(vni))
	h.Write(v[:])
	var m netlinkx.MAC
	copy(m[:], h.Sum(nil))
	m[0] = (m[0] | 0x02) &^ 0x01
	return m
}

// BackendData is the BackendData of a vxlan lease, as flannel v0.28.9 writes
// it (vxlanLeaseAttrs in pkg/backend/vxlan/vxlan.go, no JSON tags; the MAC
// marshalled by its hardwareAddr type as a quoted string):
// {"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}.
type BackendData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// ParseBackendData decodes and checks a peer's BackendData: a JSON object
// whose VNI equals vni and whose VtepMAC is a non-zero unicast MAC address.
func ParseBackendData(data json.RawMessage, vni int) (netlinkx.MAC, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return netlinkx.MAC{}, errors.New("BackendData is missing; a vxlan lease needs {\"VNI\":…,\"VtepMAC\":…}")
	}
	var d struct {
		VNI     *json.Number `json:"VNI"`
		VtepMAC *string      `json:"VtepMAC"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return netlinkx.MAC{}, fmt.Errorf("BackendData is not a JSON object with VNI and VtepMAC: %v", err)
	}
	if d.VNI == nil {
		return netlinkx.MAC{}, errors.New("BackendData has no VNI")
	}
	if v, err := strconv.Atoi(d.VNI.String()); err != nil || v != vni {
		return netlinkx.MAC{}, fmt.Errorf("BackendData VNI %s differs from the network's VNI %d", d.VNI, vni)
	}
	if d.VtepMAC == nil {
		return netlinkx.MAC{}, errors.New("BackendData has no VtepMAC")
	}
	m, err := netlinkx.ParseMAC(*d.VtepMAC)
	if err != nil {
		return netlinkx.MAC{}, fmt.Errorf("BackendData VtepMAC: %w", err)
	}
	if !m.IsUnicast() {
		return netlinkx.MAC{}, fmt.Errorf("BackendData VtepMAC %s is not a non-zero unicast address", m)
	}
	return m, nil
}

// ValidateData checks a peer lease's BackendData against the network config
// (see backend.Spec.ValidateData).
func ValidateData(cfg *subnet.Config, data json.RawMessage) error {
	o, err := ParseOptions(cfg.Backend)
	if err != nil {
		return err
	}
	_, err = ParseBackendData(data, o.VNI)
	return err
}
