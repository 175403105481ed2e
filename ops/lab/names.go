// Package lab runs a whole Weft cluster on one machine: an embedded etcd in a
// detached process, one network namespace per host joined to an underlay
// bridge by veth, a real weftd in each host, and pods (network namespaces)
// attached through the real flannel CNI plugin. Every object it makes is
// named with the lab's prefix and recorded in a state file before it is
// created, so that Down removes exactly what the lab made, even after a
// crash or a SIGKILL of Up.
package lab

import (
	"fmt"
	"regexp"
	"strconv"
)

// DefaultPrefix names the objects of the default lab.
const DefaultPrefix = "weft-lab"

// DefaultStateDir holds the default lab's state file, logs and data.
const DefaultStateDir = "/run/weft-lab"

// maxHosts bounds --hosts so that link names stay within 15 characters.
const maxHosts = 99

// maxPods bounds --pods per host.
const maxPods = 99

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,9}$`)

// Names derives every name of a lab from its prefix. Namespaces are
// "<prefix>-host<N>" and "<prefix>-host<N>-pod<M>"; links in the root
// namespace are "<prefix>-br" (the underlay bridge) and "<prefix>-h<N>" (the
// root end of host N's veth); both fit the kernel's 15-character limit.
type Names struct {
	Prefix string
}

// NewNames checks prefix: 1 to 10 characters, a lowercase letter then
// lowercase letters, digits or '-'.
func NewNames(prefix string) (Names, error) {
	if !prefixRE.MatchString(prefix) {
		return Names{}, fmt.Errorf("lab prefix %q: want 1-10 characters, a lowercase letter followed by lowercase letters, digits or '-'", prefix)
	}
	return Names{Prefix: prefix}, nil
}

// Host returns host i's name (1-based), e.g. "host1". It is also the
// suffix of its namespace.
func (Names) Host(i int) string { return "host" + strconv.Itoa(i) }

// HostNS returns host i's namespace name.
func (n Names) HostNS(i int) string { return n.Prefix + "-host" + strconv.Itoa(i) }

// PodNS returns the namespace of pod j (1-based) on host i.
func (n Names) PodNS(i, j int) string {
	return n.HostNS(i) + "-pod" + strconv.Itoa(j)
}

// Pod returns the short name of pod j on host i, e.g. "host1-pod2".
func (n Names) Pod(i, j int) string { return n.Host(i) + "-pod" + strconv.Itoa(j) }

// Bridge returns the underlay bridge's name.
func (n Names) Bridge() string { return n.Prefix + "-br" }

// HostVeth returns the root-namespace end of host i's veth.
func (n Names) HostVeth(i int) string { return n.Prefix + "-h" + strconv.Itoa(i) }

// IsNS reports whether name is a namespace this lab would make.
func (n Names) IsNS(name string) bool {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(n.Prefix) + `-host[0-9]+(-pod[0-9]+)?$`).MatchString(name)
}

// IsLink reports whether name is a root-namespace link this lab would make.
func (n Names) IsLink(name string) bool {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(n.Prefix) + `-(br|h[0-9]+)$`).MatchString(name)
}

// RuleComment is the comment carried by every iptables rule of the lab.
func (n Names) RuleComment() string { return "weft-lab:" + n.Prefix }
