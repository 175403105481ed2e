package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/etcdflags"
)

// stringList is a repeatable string flag; a comma also separates values.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*s = append(*s, f)
		}
	}
	return nil
}

// options are weftd's settings, named as flanneld's flags.
type options struct {
	etcd           etcdflags.Flags
	ifaces         stringList
	ifaceRegexes   stringList
	publicIP       string
	subnetFile     string
	renewMargin    int // minutes, as flanneld
	leaseTTL       time.Duration
	ipMasq         bool
	iptablesResync int // seconds, as flanneld
	forwardRules   bool
	healthzIP      string
	healthzPort    int
	resync         time.Duration
	verbosity      int
	logLevel       string
	logFormat      string
	version        bool
	kubeSubnetMgr  bool
}

// newFlagSet defines weftd's flags on a fresh FlagSet writing usage to out.
func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	fs.SetOutput(out)
	o.etcd.Register(fs)
	fs.Var(&o.ifaces, "iface", "interface to use (IP or name) for inter-host communication; may be repeated, tried in order")
	fs.Var(&o.ifaceRegexes, "iface-regex", "regex matching the interface name or IP to use for inter-host communication; may be repeated")
	fs.StringVar(&o.publicIP, "public-ip", "", "IP accessible by other nodes for inter-host communication (default: the interface's address)")
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "filename where the env variables (subnet, MTU, ...) will be written to")
	fs.IntVar(&o.renewMargin, "subnet-lease-renew-margin", 60, "subnet lease renewal margin, in minutes; the lease is refreshed when less than this is left")
	fs.DurationVar(&o.leaseTTL, "subnet-lease-ttl", 24*time.Hour, "TTL of the subnet lease in etcd (weft; flanneld always uses 24h)")
	fs.BoolVar(&o.ipMasq, "ip-masq", false, "set up IP masquerade rules for traffic leaving the overlay network")
	fs.IntVar(&o.iptablesResync, "iptables-resync", 5, "resync period of the firewall rules (iptables, or nftables with EnableNFTables), in seconds")
	fs.BoolVar(&o.forwardRules, "iptables-forward-rules", true, "add forward rules accepting traffic to and from the network (iptables FLANNEL-FWD, or the nftables forward chain)")
	fs.StringVar(&o.healthzIP, "healthz-ip", "0.0.0.0", "the IP address for the healthz server to listen on")
	fs.IntVar(&o.healthzPort, "healthz-port", 0, "the port for the healthz server to listen on (0 to disable)")
	fs.DurationVar(&o.resync, "resync-interval", 10*time.Second, "how often the data plane is compared with the leases even without events (weft)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity: 0 info, 1 or more debug (as flanneld's -v)")
	fs.StringVar(&o.logLevel, "log-level", "", "log level: debug, info, warn or error (overrides -v)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.BoolVar(&o.kubeSubnetMgr, "kube-subnet-mgr", false, "not supported yet: weftd runs in etcd mode only")
	return fs
}

// errUsage marks an error that should exit with code 2.
var errUsage = errors.New("usage")

// parseOptions parses args, taking each flag not given on the command line
// from FLANNELD_<NAME> in env (as flanneld: -etcd-endpoints is
// FLANNELD_ETCD_ENDPOINTS), and checks the values.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q (weftd takes flags only)", errUsage, fs.Arg(0))
	}
	if err := etcdflags.FromEnv(fs, getenv, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return o, o.check()
}

func (o *options) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
	}
	if o.kubeSubnetMgr {
		return bad("-kube-subnet-mgr is not supported yet: weftd runs in etcd mode only (give -etcd-endpoints and write the network config to <etcd-prefix>/config)")
	}
	if err := o.etcd.Check(); err != nil {
		return bad("%v", err)
	}
	if o.publicIP != "" {
		a, err := netip.ParseAddr(o.publicIP)
		if err != nil || !a.Is4() {
			return bad("-public-ip %q is not an IPv4 address", o.publicIP)
		}
	}
	if o.renewMargin <= 0 {
		return bad("-subnet-lease-renew-margin %d must be a positive number of minutes", o.renewMargin)
	}
	if o.leaseTTL < 2*time.Second {
		return bad("-subnet-lease-ttl %s is too short (at least 2s)", o.leaseTTL)
	}
	if o.iptablesResync <= 0 {
		return bad("-iptables-resync %d must be a positive number of seconds", o.iptablesResync)
	}
	if o.healthzPort < 0 || o.healthzPort > 65535 {
		return bad("-healthz-port %d is not a port number (0 disables the server)", o.healthzPort)
	}
	if _, err := netip.ParseAddr(o.healthzIP); err != nil {
		return bad("-healthz-ip %q is not an IP address", o.healthzIP)
	}
	if o.resync <= 0 {
		return bad("-resync-interval %s must be positive", o.resync)
	}
	if _, err := o.level(); err != nil {
		return bad("%v", err)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return bad("-log-format %q: want text or json", o.logFormat)
	}
	return nil
}

func (o *options) endpoints() []string { return o.etcd.EndpointList() }

func (o *options) level() (slog.Level, error) {
	switch strings.ToLower(o.logLevel) {
	case "":
		if o.verbosity > 0 {
			return slog.LevelDebug, nil
		}
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel)
}

func (o *options) logger() *slog.Logger {
	lvl, _ := o.level()
	ho := &slog.HandlerOptions{Level: lvl}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, ho))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, ho))
}

func (o *options) healthzAddr() string {
	if o.healthzPort == 0 {
		return ""
	}
	return netip.AddrPortFrom(netip.MustParseAddr(o.healthzIP), uint16(o.healthzPort)).String()
}
