package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/atomicfile"
)

// stateVersion is the format of the state file.
const stateVersion = 1

// State is everything a lab made, written to <state dir>/state.json before
// each object is created. Down works from it alone.
type State struct {
	Version  int       `json:"version"`
	Prefix   string    `json:"prefix"`
	StateDir string    `json:"stateDir"`
	Created  time.Time `json:"created"`
	// Ready is set once Up has finished.
	Ready   bool   `json:"ready"`
	Backend string `json:"backend"`
	// NFTables says the hosts keep their firewall rules in nftables.
	NFTables bool         `json:"nftables,omitempty"`
	Network  netip.Prefix `json:"network"`
	// IPv6Network is set in a dual-stack or IPv6-only lab; NoIPv4 in an
	// IPv6-only one.
	IPv6Network netip.Prefix `json:"ipv6Network,omitzero"`
	NoIPv4      bool         `json:"noIPv4,omitempty"`
	BinDir      string       `json:"binDir"`

	// Underlay is the /24 of the bridge and hosts; BridgeAddr is the
	// bridge's own address in it (etcd listens there).
	Underlay    netip.Prefix `json:"underlay"`
	BridgeAddr  netip.Addr   `json:"bridgeAddr"`
	EtcdPort    int          `json:"etcdPort"`
	EtcdPeer    int          `json:"etcdPeerPort"`
	HealthzPort int          `json:"healthzPort"`

	// Namespaces, Links and Rules are recorded before they are created;
	// Procs right after they start (a process lost in between is found by
	// its command line, which names the state dir).
	Namespaces []string `json:"namespaces"`
	Links      []string `json:"links"`
	Rules      []Rule   `json:"iptables"`
	Procs      []Proc   `json:"processes"`

	Hosts []Host `json:"hosts"`

	// NeighSaved are the neighbour table's thresholds the lab found, and
	// NeighSet those it set, when it raised them (Down restores them).
	NeighSaved *NeighThresh `json:"neighSaved,omitempty"`
	NeighSet   *NeighThresh `json:"neighSet,omitempty"`

	// Kube is set in Kubernetes mode (`weft lab up --kube`).
	Kube *KubeState `json:"kube,omitempty"`
}

// Rule is one iptables rule the lab added in the root namespace.
type Rule struct {
	Table string   `json:"table"`
	Chain string   `json:"chain"`
	Spec  []string `json:"spec"`
}

// Proc is a detached process the lab started.
type Proc struct {
	Name string `json:"name"` // "etcd" or a host name
	PID  int    `json:"pid"`
	// Exe is the program path, as in /proc/<pid>/cmdline's first field.
	Exe string `json:"exe"`
	Log string `json:"log"`
}

// Host is one lab host.
type Host struct {
	Name string     `json:"name"`
	NS   string     `json:"netns"`
	Veth string     `json:"veth"`
	Addr netip.Addr `json:"addr"`
	// Addr6 is the host's IPv6 underlay address, in a lab with IPv6.
	Addr6 netip.Addr `json:"addr6,omitzero"`
	// SubnetFile is weftd's subnet.env; DataDir holds the host's CNI
	// cache, flannel plugin data and host-local allocations.
	SubnetFile string `json:"subnetFile"`
	DataDir    string `json:"dataDir"`
	Pods       []Pod  `json:"pods"`
}

// Pod is one pod namespace and its attachment.
type Pod struct {
	Name string `json:"name"`
	NS   string `json:"netns"`
	// Attached is set before the CNI ADD, so that Down also deletes a
	// half-made attachment.
	Attached bool         `json:"attached"`
	Addr     netip.Prefix `json:"addr"`
	Addr6    netip.Prefix `json:"addr6,omitzero"`
}

// StatePath returns the state file's path in dir.
func StatePath(dir string) string { return filepath.Join(dir, "state.json") }

// ErrNoLab is returned by LoadState when no state file exists.
var ErrNoLab = errors.New("no lab is running")

// LoadState reads the state file in dir.
func LoadState(dir string) (*State, error) {
	path := StatePath(dir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s)", ErrNoLab, path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parsing lab state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("lab state %s: version %d, this weft understands %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

// recorder owns the state during Up and writes it after every change.
type recorder struct {
	mu sync.Mutex
	st *State
}

// update applies fn to the state and writes it atomically.
func (r *recorder) update(fn func(*State)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r.st)
	b, err := json.MarshalIndent(r.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding lab state: %w", err)
	}
	if err := atomicfile.Write(StatePath(r.st.StateDir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	return nil
}

// snapshot returns a deep enough copy of the state for reading.
func (r *recorder) snapshot() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := *r.st
	s.Hosts = slices.Clone(s.Hosts)
	for i := range s.Hosts {
		s.Hosts[i].Pods = slices.Clone(s.Hosts[i].Pods)
	}
	return s
}

// addNS records a namespace name.
func (r *recorder) addNS(name string) error {
	return r.update(func(s *State) {
		if !slices.Contains(s.Namespaces, name) {
			s.Namespaces = append(s.Namespaces, name)
		}
	})
}

// addLink records a root-namespace link name.
func (r *recorder) addLink(name string) error {
	return r.update(func(s *State) {
		if !slices.Contains(s.Links, name) {
			s.Links = append(s.Links, name)
		}
	})
}

// lockFile takes an exclusive flock on <dir>/lock, creating dir. With wait
// false it fails at once when another process holds it.
func lockFile(dir string, wait time.Duration) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lab state dir: %w", err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lab lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: another weft lab command holds %s", ErrBusy, path)
			}
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ErrBusy is returned when another lab command works on the same state dir.
var ErrBusy = errors.New("lab busy")
