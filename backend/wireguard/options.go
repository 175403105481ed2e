package wireguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/kernel/wg"
	"github.com/weftnet/weft/subnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TypeName is the backend type as written in the network config and leases.
const TypeName = "wireguard"

// Defaults and constants, as flanneld's where flanneld has them.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
	// DeviceName and DeviceNameV6 are flanneld's device names.
	DeviceName   = "flannel-wg"
	DeviceNameV6 = "flannel-wg-v6"
	// OverheadIPv4 is what WireGuard adds to a packet carried over IPv4:
	// outer IPv4 20, UDP 8, WireGuard data header 16, Poly1305 tag 16.
	// flanneld takes 80 (the IPv6 figure) for both.
	OverheadIPv4 = 60
	// OverheadIPv6 is the same over IPv6 (outer header 40).
	OverheadIPv6 = 80
	// maxKeepalive is WireGuard's limit (a 16-bit number of seconds).
	maxKeepalive = 65535
)

// ErrInvalidOptions is wrapped by errors about the Backend options.
var ErrInvalidOptions = errors.New("invalid wireguard backend options")

// Mode is flanneld's tunnel mode: "separate" (a device per family) or a
// single device carrying both families, with endpoints over "ipv4",
// "ipv6", or chosen per peer ("auto").
type Mode string

// The modes.
const (
	ModeSeparate Mode = "separate"
	ModeAuto     Mode = "auto"
	ModeIPv4     Mode = "ipv4"
	ModeIPv6     Mode = "ipv6"
)

// Options are the wireguard backend's settings, from the Backend object of
// the network config, with flanneld's field names plus Engine.
type Options struct {
	// ListenPort is the UDP port of flannel-wg (and of the single device).
	ListenPort int
	// ListenPortV6 is the UDP port of flannel-wg-v6 in separate mode.
	ListenPortV6 int
	// PSK is the preshared key given to every peer (zero: none).
	PSK wgtypes.Key
	// Keepalive is the persistent keepalive interval (0: off); the JSON
	// field PersistentKeepaliveInterval is an integer number of seconds.
	Keepalive time.Duration
	// MTU is the underlay's MTU (0: the external interface's); the device
	// gets it minus the overhead of its endpoints' family.
	MTU int
	// Mode is the tunnel mode (default separate).
	Mode Mode
	// Engine chooses the WireGuard implementation: auto (default), kernel
	// or userspace. Not a flanneld field (flanneld ignores it).
	Engine wg.Choice
}

// ParseOptions parses the Backend object of the network config (raw may be
// empty). Fields other than the options (such as Type) are ignored, as
// flanneld ignores them; JSON keys match case-insensitively, as flanneld's.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := Options{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, Mode: ModeSeparate, Engine: wg.Auto}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return o, nil
	}
	var f struct {
		ListenPort                  json.RawMessage `json:"ListenPort"`
		ListenPortV6                json.RawMessage `json:"ListenPortV6"`
		PSK                         *string         `json:"PSK"`
		PersistentKeepaliveInterval json.RawMessage `json:"PersistentKeepaliveInterval"`
		MTU                         json.RawMessage `json:"MTU"`
		Mode                        *string         `json:"Mode"`
		Engine                      *string         `json:"Engine"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return o, fmt.Errorf("%w: Backend %s: %v (want e.g. {\"Type\":\"wireguard\",\"ListenPort\":51820,\"PersistentKeepaliveInterval\":25})", ErrInvalidOptions, raw, err)
	}
	num := func(name string, n json.RawMessage, lo, hi, def int) (int, error) {
		if n == nil || string(n) == "null" {
			return def, nil
		}
		v, err := jsonInt(n)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%w: %s %s: want an integer from %d to %d", ErrInvalidOptions, name, n, lo, hi)
		}
		return v, nil
	}
	var err error
	if o.ListenPort, err = num("ListenPort", f.ListenPort, 1, 65535, DefaultListenPort); err != nil {
		return o, err
	}
	if o.ListenPortV6, err = num("ListenPortV6", f.ListenPortV6, 1, 65535, DefaultListenPortV6); err != nil {
		return o, err
	}
	ka, err := num("PersistentKeepaliveInterval", f.PersistentKeepaliveInterval, 0, maxKeepalive, 0)
	if err != nil {
		return o, fmt.Errorf("%w (seconds, as flanneld reads it)", err)
	}
	o.Keepalive = time.Duration(ka) * time.Second
	if o.MTU, err = num("MTU", f.MTU, 0, 65535, 0); err != nil {
		return o, err
	}
	if o.MTU != 0 && o.MTU < 1280 {
		return o, fmt.Errorf("%w: MTU %d: want 0 (the external interface's) or the underlay's MTU, at least 1280", ErrInvalidOptions, o.MTU)
	}
	if f.PSK != nil && *f.PSK != "" {
		// The key is a secret: the error describes it without quoting it.
		k, err := wgtypes.ParseKey(strings.TrimSpace(*f.PSK))
		if err != nil {
			return o, fmt.Errorf("%w: PSK (%d characters) is not a base64-encoded 32-byte key such as `wg genpsk` prints", ErrInvalidOptions, len(*f.PSK))
		}
		o.PSK = k
	}
	if f.Mode != nil && *f.Mode != "" {
		switch m := Mode(*f.Mode); m {
		case ModeSeparate, ModeAuto, ModeIPv4, ModeIPv6:
			o.Mode = m
		default:
			return o, fmt.Errorf("%w: Mode %q: want \"separate\", \"auto\", \"ipv4\" or \"ipv6\"", ErrInvalidOptions, *f.Mode)
		}
	}
	if f.Engine != nil {
		c, err := wg.ParseChoice(*f.Engine)
		if err != nil {
			return o, fmt.Errorf("%w: Engine: %v", ErrInvalidOptions, err)
		}
		o.Engine = c
	}
	return o, nil
}

// BackendData is the BackendData (and BackendV6Data) of a wireguard lease:
// {"PublicKey":"<base64>","Port":51820} as flanneld writes it, plus the
// engine ("kernel" or "userspace"), which flanneld ignores and `weft
// leases` shows.
type BackendData struct {
	PublicKey string `json:"PublicKey"`
	Port      int    `json:"Port"`
	Engine    string `json:"Engine,omitempty"`
}

// PeerData is a peer's BackendData, decoded and checked.
type PeerData struct {
	PublicKey wgtypes.Key
	// Port is 0 when the lease has none (older flanneld): the peer then
	// listens on the same port as this node.
	Port   int
	Engine string
}

// ParseBackendData decodes and checks a peer's BackendData: a JSON object
// with a base64 32-byte non-zero PublicKey and a Port from 0 to 65535.
func ParseBackendData(data json.RawMessage) (PeerData, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return PeerData{}, errors.New("BackendData is missing; a wireguard lease needs {\"PublicKey\":…,\"Port\":…}")
	}
	var d struct {
		PublicKey *string         `json:"PublicKey"`
		Port      json.RawMessage `json:"Port"`
		Engine    *string         `json:"Engine"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return PeerData{}, fmt.Errorf("BackendData is not a JSON object with PublicKey and Port: %v", err)
	}
	if d.PublicKey == nil {
		return PeerData{}, errors.New("BackendData has no PublicKey")
	}
	k, err := wgtypes.ParseKey(*d.PublicKey)
	if err != nil {
		return PeerData{}, fmt.Errorf("BackendData PublicKey %q is not a base64-encoded 32-byte key", *d.PublicKey)
	}
	if k == (wgtypes.Key{}) {
		return PeerData{}, fmt.Errorf("BackendData PublicKey %q is all zeros", *d.PublicKey)
	}
	pd := PeerData{PublicKey: k}
	if d.Port != nil && string(d.Port) != "null" {
		p, err := jsonInt(d.Port)
		if err != nil || p < 0 || p > 65535 {
			return PeerData{}, fmt.Errorf("BackendData Port %s: want an integer from 0 to 65535", d.Port)
		}
		pd.Port = p
	}
	if d.Engine != nil {
		pd.Engine = *d.Engine
	}
	return pd, nil
}

// jsonInt decodes a JSON number that is an integer (not a string, as
// flanneld's integer fields refuse strings).
func jsonInt(raw json.RawMessage) (int, error) {
	var n json.Number
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' {
		return 0, fmt.Errorf("%s is not a JSON number", raw)
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, err
	}
	return strconv.Atoi(n.String())
}

// ValidateData checks a peer lease's BackendData against the network
// config (see backend.Spec.ValidateData).
func ValidateData(cfg *subnet.Config, data json.RawMessage) error {
	if _, err := ParseOptions(cfg.Backend); err != nil {
		return err
	}
	_, err := ParseBackendData(data)
	return err
}

// singleTunnel reports whether the mode uses one device for both families.
func (m Mode) singleTunnel() bool { return m != ModeSeparate }

// AdvertisedV6Port is the Port this node writes in BackendV6Data: the port
// its IPv6 traffic is received on. In separate mode that is ListenPortV6
// (flannel-wg-v6); in the single-tunnel modes it is ListenPort, the one
// device's port. flanneld writes ListenPortV6 in every mode, a port nothing
// listens on in single-tunnel modes (COMPAT-WAVE2 5.10).
func (o Options) AdvertisedV6Port() int {
	if o.Mode.singleTunnel() {
		return o.ListenPort
	}
	return o.ListenPortV6
}

// PeerPort is the UDP port to dial a peer on over family v6 (false: IPv4),
// given its decoded BackendData (v4) and BackendV6Data (v6; nil when
// absent). A port of 0 (older flanneld) means this node's own port.
//
// In separate mode, v4 peers are dialled on their BackendData port and v6
// peers on their BackendV6Data port. In single-tunnel modes every peer
// listens on its one device's port, which is its BackendData port (flanneld
// and Weft agree there); its BackendV6Data port is used only when it has no
// BackendData (an IPv6-only node), and then only from a Weft node, because
// flanneld advertises ListenPortV6 there while listening on ListenPort: for
// a flanneld peer (no Engine in its data) this node's ListenPort is dialled.
func (o Options) PeerPort(v6 bool, d4, d6 *PeerData) int {
	or := func(p, def int) int {
		if p == 0 {
			return def
		}
		return p
	}
	if !o.Mode.singleTunnel() {
		if v6 {
			if d6 == nil {
				return o.ListenPortV6
			}
			return or(d6.Port, o.ListenPortV6)
		}
		if d4 == nil {
			return o.ListenPort
		}
		return or(d4.Port, o.ListenPort)
	}
	if d4 != nil {
		return or(d4.Port, o.ListenPort)
	}
	if d6 != nil && d6.Engine != "" {
		return or(d6.Port, o.ListenPort)
	}
	return o.ListenPort
}
