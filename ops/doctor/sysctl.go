package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procSys is where the sysctls are read (a variable for unit tests).
var procSys = "/proc/sys"

// readSysctl reads a sysctl given by its dotted name with "/" for dots in
// device names (net.ipv4.conf.flannel/1.rp_filter), as sysctl(8) names it.
func readSysctl(name string) (int, error) {
	parts := strings.Split(name, ".")
	for i := range parts {
		parts[i] = strings.ReplaceAll(parts[i], "/", ".")
	}
	path := filepath.Join(append([]string{procSys}, parts...)...)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", name, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %q is not a number", name, strings.TrimSpace(string(b)))
	}
	return v, nil
}

// sysctlName returns the sysctl(8) name of a per-device setting.
func sysctlName(dev, key string) string {
	return "net.ipv4.conf." + strings.ReplaceAll(dev, ".", "/") + "." + key
}

// checkSysctls checks ip_forward, rp_filter on the overlay device and, when
// pods are bridged, bridge-nf-call-iptables. The agent turns ip_forward on
// at start only; the others belong to the distribution, so the doctor
// reports them rather than anyone re-asserting them.
func (n *node) checkSysctls() []Result {
	var out []Result
	fwd := Result{Check: "sysctl ip_forward"}
	switch v, err := readSysctl("net.ipv4.ip_forward"); {
	case err != nil:
		fwd.Status, fwd.Verdict, fwd.Cause = Unknown, "cannot read net.ipv4.ip_forward", err.Error()
	case v != 1:
		fwd.Status, fwd.Verdict = Problem, "net.ipv4.ip_forward is 0: the node does not forward pod traffic"
		fwd.Cause = "something turned IPv4 forwarding off after weftd started (weftd turns it on at start only): a sysctl.d file, a network manager, a hardening script"
		fwd.Fix = []string{"sysctl -w net.ipv4.ip_forward=1", "echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-weft.conf   # keep it across reboots"}
	default:
		fwd.Status, fwd.Verdict = OK, "net.ipv4.ip_forward is 1"
	}
	out = append(out, fwd)

	rp := Result{Check: "sysctl rp_filter"}
	dev := n.overlayDevice()
	if dev == "" {
		rp.Status, rp.Verdict = Skipped, "no overlay device with this backend"
	} else {
		all, err1 := readSysctl("net.ipv4.conf.all.rp_filter")
		one, err2 := readSysctl(sysctlName(dev, "rp_filter"))
		switch {
		case err1 != nil:
			rp.Status, rp.Verdict, rp.Cause = Unknown, "cannot read rp_filter", err1.Error()
		case err2 != nil:
			rp.Status, rp.Verdict, rp.Cause = Unknown, "cannot read rp_filter of "+dev+" (does it exist?)", err2.Error()
		case max(all, one) == 1:
			rp.Status = Problem
			rp.Verdict = fmt.Sprintf("strict reverse-path filtering on %s (all=%d, %s=%d)", dev, all, dev, one)
			rp.Cause = "the kernel drops packets from peers' pods that arrive on " + dev + " when it would route the reply another way (the kernel uses the larger of all and the device's value)"
			rp.Fix = []string{"sysctl -w " + sysctlName(dev, "rp_filter") + "=2"}
			if all == 1 {
				rp.Fix = append(rp.Fix, "sysctl -w net.ipv4.conf.all.rp_filter=2")
			}
		default:
			rp.Status, rp.Verdict = OK, fmt.Sprintf("rp_filter on %s is %d (all=%d): not strict", dev, max(all, one), all)
		}
	}
	out = append(out, rp)

	br := Result{Check: "sysctl bridge-nf-call-iptables"}
	if _, err := os.Stat(filepath.Join("/sys/class/net", n.o.Bridge)); err != nil {
		br.Status, br.Verdict = Skipped, fmt.Sprintf("no %s bridge: no pods bridged yet", n.o.Bridge)
	} else {
		switch v, err := readSysctl("net.bridge.bridge-nf-call-iptables"); {
		case err != nil:
			br.Status, br.Verdict = Warn, "br_netfilter is not loaded: iptables does not see traffic between pods on "+n.o.Bridge
			br.Cause = "kube-proxy's Service rules and network policies rely on it for pod-to-pod traffic on one node; the overlay itself works without it"
			br.Fix = []string{"modprobe br_netfilter", "sysctl -w net.bridge.bridge-nf-call-iptables=1"}
		case v != 1:
			br.Status, br.Verdict = Warn, "net.bridge.bridge-nf-call-iptables is 0: iptables does not see traffic between pods on "+n.o.Bridge
			br.Cause = "kube-proxy's Service rules and network policies rely on it for pod-to-pod traffic on one node; the overlay itself works without it"
			br.Fix = []string{"sysctl -w net.bridge.bridge-nf-call-iptables=1"}
		default:
			br.Status, br.Verdict = OK, "net.bridge.bridge-nf-call-iptables is 1"
		}
	}
	out = append(out, br)
	return out
}

// overlayDevice returns the backend's device ("flannel.1"), or "".
func (n *node) overlayDevice() string {
	if n.cfg == nil || n.cfg.BackendType != "vxlan" {
		return ""
	}
	return n.device
}
