package wg

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The cross-platform userspace API (UAPI) of wireguard-go is text: one
// key=value per line, keys in hex. These functions write the "set"
// operations the userspace engine sends and read the "get" answer.

func hexKey(k Key) string { return hex.EncodeToString(k[:]) }

func parseHexKey(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("key %q: want %d bytes in hex", s, len(k))
	}
	copy(k[:], b)
	return k, nil
}

// deviceSet returns the UAPI set operation for a device's key and port.
func deviceSet(d Device) string {
	return fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hexKey(d.PrivateKey), d.ListenPort)
}

// peersSet returns the UAPI set operation that adds or updates set, then
// removes remove.
func peersSet(set []Peer, remove []Key) string {
	var b strings.Builder
	for _, p := range set {
		fmt.Fprintf(&b, "public_key=%s\n", hexKey(p.PublicKey))
		fmt.Fprintf(&b, "preshared_key=%s\n", hexKey(p.PresharedKey))
		if p.Endpoint.IsValid() {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.Keepalive/time.Second))
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	for _, k := range remove {
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hexKey(k))
	}
	return b.String()
}

// parseGet reads the peers from a UAPI get answer (device lines are
// skipped), in the order given.
func parseGet(s string) ([]Peer, error) {
	var peers []Peer
	var cur *Peer
	var sec, nsec int64
	flush := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("UAPI answer line %q: want key=value", line)
		}
		if key == "public_key" {
			flush()
			k, err := parseHexKey(val)
			if err != nil {
				return nil, fmt.Errorf("UAPI answer: public_key: %w", err)
			}
			peers = append(peers, Peer{PublicKey: k})
			cur = &peers[len(peers)-1]
			continue
		}
		if cur == nil {
			continue // a device line: private_key, listen_port, fwmark, errno
		}
		var err error
		switch key {
		case "preshared_key":
			cur.PresharedKey, err = parseHexKey(val)
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(val)
			if err == nil {
				cur.Endpoint = netip.AddrPortFrom(cur.Endpoint.Addr().Unmap(), cur.Endpoint.Port())
			}
		case "allowed_ip":
			var p netip.Prefix
			if p, err = netip.ParsePrefix(val); err == nil {
				cur.AllowedIPs = append(cur.AllowedIPs, p)
			}
		case "persistent_keepalive_interval":
			var n int
			n, err = strconv.Atoi(val)
			cur.Keepalive = time.Duration(n) * time.Second
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(val, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(val, 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("UAPI answer: %s=%s: %w", key, val, err)
		}
	}
	flush()
	for i := range peers {
		peers[i].AllowedIPs = sortedPrefixes(peers[i].AllowedIPs)
	}
	SortPeers(peers)
	return peers, sc.Err()
}
