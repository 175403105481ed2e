package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

const (
	ipForwardPath   = "/proc/sys/net/ipv4/ip_forward"
	ipv6ForwardPath = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// ensureSysctl turns on forwarding through path (ipForwardPath for IPv4,
// ipv6ForwardPath for IPv6) where the agent may write it; where /proc/sys
// is read-only (an unprivileged container) it checks the value and warns
// when forwarding is off.
func ensureSysctl(log *slog.Logger, path string) {
	name := "net.ipv4.ip_forward"
	if strings.HasPrefix(path, "/proc/sys/") {
		name = strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		log.Warn("cannot read "+name+"; pods on other nodes may be unreachable", "err", err)
		return
	}
	if bytes.Equal(bytes.TrimSpace(cur), []byte("1")) {
		return
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		log.Warn(name+" is off and cannot be turned on: traffic to and from pods will not be forwarded; set it on the host (sysctl -w "+name+"=1)",
			"err", fmt.Errorf("writing %s: %w", path, err))
		return
	}
	log.Info("enabled " + name)
}
