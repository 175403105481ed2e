package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// ensureSysctl turns on IPv4 forwarding through path (ipForwardPath) where
// the agent may write it; where /proc/sys is read-only (an unprivileged
// container) it checks the value and warns when forwarding is off.
func ensureSysctl(log *slog.Logger, path string) {
	cur, err := os.ReadFile(path)
	if err != nil {
		log.Warn("cannot read net.ipv4.ip_forward; pods on other nodes may be unreachable", "err", err)
		return
	}
	if bytes.Equal(bytes.TrimSpace(cur), []byte("1")) {
		return
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		log.Warn("net.ipv4.ip_forward is off and cannot be turned on: traffic to and from pods will not be forwarded; set it on the host (sysctl -w net.ipv4.ip_forward=1)",
			"err", fmt.Errorf("writing %s: %w", path, err))
		return
	}
	log.Info("enabled net.ipv4.ip_forward")
}
