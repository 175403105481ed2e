package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// The plugin reads its call (the CNI_* variables and the config on stdin)
// and prints its answer itself, as the CNI spec describes, rather than
// through libcni's pkg/skel: skel links pkg/ns (vishvananda/netns,
// x/sys/unix) and compiles a regular expression at start, which a runtime
// pays on every exec of the plugin. cmd/flannel's deps test keeps them out.

// CmdArgs are the parameters of one call: the CNI_* variables and the
// config read from stdin.
type CmdArgs struct {
	ContainerID   string
	Netns         string
	IfName        string
	Args          string
	Path          string
	NetnsOverride string
	StdinData     []byte
}

// Main runs the plugin as a runtime calls it: it reads the call from the
// environment and stdin, runs the verb, prints the result or a CNI error on
// stdout and exits (1 after an error).
func Main(p *Plugin) {
	os.Exit(p.Run(os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// Run is Main with its inputs and outputs given; it returns the exit status.
func (p *Plugin) Run(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if p.Stdout == nil {
		p.Stdout = stdout
	}
	if p.Stderr == nil {
		p.Stderr = stderr
	}
	e := p.dispatch(getenv, stdin, stdout, stderr)
	if e == nil {
		return 0
	}
	b, err := json.MarshalIndent(e, "", "    ")
	if err == nil {
		_, err = stdout.Write(append(b, '\n'))
	}
	if err != nil {
		fmt.Fprintf(stderr, "flannel: writing the error %q to stdout: %v\n", e.Error(), err)
	}
	return 1
}

// verb is one CNI_COMMAND the plugin answers.
type verb struct {
	// minConf is the oldest config version that may ask for the verb.
	minConf string
	// needs are the variables the verb requires besides CNI_COMMAND.
	needs []string
	run   func(*Plugin, *CmdArgs) error
	// netnsCheck: refuse a CNI_NETNS that is the plugin's own namespace
	// (a runtime bug that would configure, or tear down, the host's
	// interfaces), unless CNI_NETNS_OVERRIDE says it is meant. libcni's skel
	// checks this only after the verb has run; here nothing runs.
	netnsCheck bool
}

var verbs = map[string]verb{
	"ADD":    {"", []string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}, (*Plugin).Add, true},
	"DEL":    {"", []string{"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"}, (*Plugin).Del, true},
	"CHECK":  {"0.4.0", []string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}, (*Plugin).Check, false},
	"GC":     {"1.1.0", []string{"CNI_PATH"}, (*Plugin).GC, false},
	"STATUS": {"1.1.0", []string{"CNI_PATH"}, (*Plugin).Status, false},
}

func (p *Plugin) dispatch(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) *types.Error {
	cmd := getenv("CNI_COMMAND")
	if cmd == "" {
		fmt.Fprintln(stderr, About)
		fmt.Fprintf(stderr, "CNI protocol versions supported: %s\n", strings.Join(Versions.SupportedVersions(), ", "))
		return nil
	}
	if cmd == "VERSION" {
		if err := Versions.Encode(stdout); err != nil {
			return types.NewError(types.ErrIOFailure, fmt.Sprintf("printing the versions: %v", err), "")
		}
		return nil
	}
	v, ok := verbs[cmd]
	if !ok {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", cmd), "")
	}
	var missing []string
	for _, name := range v.needs {
		if getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("%s needs %s, which the runtime did not set", cmd, strings.Join(missing, ", ")), "")
	}
	args := &CmdArgs{
		ContainerID:   getenv("CNI_CONTAINERID"),
		Netns:         getenv("CNI_NETNS"),
		IfName:        getenv("CNI_IFNAME"),
		Args:          getenv("CNI_ARGS"),
		Path:          getenv("CNI_PATH"),
		NetnsOverride: getenv("CNI_NETNS_OVERRIDE"),
	}
	// The container ID and interface name are checked where the verb
	// uses them (a runtime may leave stale values for GC or STATUS).
	if slices.Contains(v.needs, "CNI_CONTAINERID") {
		if e := validName("CNI_CONTAINERID", args.ContainerID, types.ErrInvalidEnvironmentVariables); e != nil {
			return e
		}
	}
	if slices.Contains(v.needs, "CNI_IFNAME") {
		if e := validIfName(args.IfName); e != nil {
			return e
		}
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("reading the network config from stdin: %v", err), "")
	}
	args.StdinData = data
	if e := checkConfig(cmd, v.minConf, data); e != nil {
		return e
	}
	if v.netnsCheck && !overridden(args.NetnsOverride) && isOwnNetns(args.Netns) {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %s is the plugin's own network namespace", args.Netns), "")
	}
	if err := v.run(p, args); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return nil
}

// checkConfig checks what every verb needs of the config: JSON with a
// valid network name, a cniVersion the plugin speaks, and, for verbs newer
// than the first spec, a cniVersion that has the verb.
func checkConfig(cmd, minConf string, data []byte) *types.Error {
	var c struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding the network config on stdin: %v", err), "")
	}
	if c.Name == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, `the network config has no "name"`, "")
	}
	if e := validName("the network name", c.Name, types.ErrInvalidNetworkConfig); e != nil {
		return e
	}
	confVersion, err := (&version.ConfigDecoder{}).Decode(data)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if minConf != "" {
		ok, err := version.GreaterThanOrEqualTo(confVersion, minConf)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		if !ok {
			return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("%s needs a config of CNI version %s or later; this one is %s", cmd, minConf, confVersion), "")
		}
	}
	if verr := (&version.Reconciler{}).Check(confVersion, Versions); verr != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("the config's CNI version %s is not one the plugin speaks", confVersion), verr.Details())
	}
	return nil
}

// validName checks a container ID or network name: a letter or digit, then
// letters, digits, '_', '.' and '-'.
func validName(what, s string, code uint) *types.Error {
	for i, r := range s {
		ok := r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '_' || r == '.' || r == '-'))
		if !ok {
			return types.NewError(code, fmt.Sprintf("%s %q: only letters, digits, '_', '.' and '-' (not first) are allowed", what, s), s)
		}
	}
	return nil
}

// maxIfName is the longest interface name the kernel takes (IFNAMSIZ - 1).
const maxIfName = 15

// validIfName checks CNI_IFNAME as the kernel would take it.
func validIfName(s string) *types.Error {
	switch {
	case len(s) > maxIfName:
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q is longer than %d bytes", s, maxIfName), "")
	case s == "." || s == "..":
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q is not an interface name", s), "")
	case strings.ContainsAny(s, "/: \t\n\v\f\r"):
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q contains '/', ':' or white space", s), "")
	}
	return nil
}

func overridden(v string) bool { return v == "1" || strings.EqualFold(v, "true") }

// isOwnNetns reports whether path is the network namespace the plugin runs
// in. A path that cannot be read (empty, or the namespace already gone, as
// on a DEL) is not.
func isOwnNetns(path string) bool {
	if path == "" {
		return false
	}
	var their, own syscall.Stat_t
	if syscall.Stat(path, &their) != nil || syscall.Stat("/proc/self/ns/net", &own) != nil {
		return false
	}
	return their.Dev == own.Dev && their.Ino == own.Ino
}
