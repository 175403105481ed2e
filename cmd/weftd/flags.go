package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/etcdflags"
	"github.com/weftnet/weft/internal/kubeflags"
	"github.com/weftnet/weft/internal/nodeflags"
)

// options are weftd's settings, named as flanneld's flags.
type options struct {
	etcd           etcdflags.Flags
	node           nodeflags.Flags
	renewMargin    int // minutes, as flanneld
	leaseTTL       time.Duration
	iptablesResync int // seconds, as flanneld
	resync         time.Duration
	verbosity      int
	logLevel       string
	logFormat      string
	version        bool

	// Kubernetes mode (flanneld's -kube-subnet-mgr).
	kube              kubeflags.Flags
	setNodeNetUnavail bool
	// etcdGiven names the etcd flags given (on the command line or as
	// FLANNELD_* variables), to warn about in Kubernetes mode.
	etcdGiven []string
}

// newFlagSet defines weftd's flags on a fresh FlagSet writing usage to out.
func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	fs.SetOutput(out)
	o.etcd.Register(fs)
	o.node.Register(fs)
	fs.IntVar(&o.renewMargin, "subnet-lease-renew-margin", 60, "subnet lease renewal margin, in minutes; the lease is refreshed when less than this is left")
	fs.DurationVar(&o.leaseTTL, "subnet-lease-ttl", 24*time.Hour, "TTL of the subnet lease in etcd (weft; flanneld always uses 24h)")
	fs.IntVar(&o.iptablesResync, "iptables-resync", 5, "resync period of the firewall rules (iptables, or nftables with EnableNFTables), in seconds")
	fs.DurationVar(&o.resync, "resync-interval", 10*time.Second, "how often the data plane is compared with the leases even without events (weft)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity: 0 info, 1 or more debug (as flanneld's -v)")
	fs.StringVar(&o.logLevel, "log-level", "", "log level: debug, info, warn or error (overrides -v)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	o.kube.Register(fs)
	fs.BoolVar(&o.setNodeNetUnavail, "set-node-network-unavailable", true, "set the Node's NetworkUnavailable condition to False once the network is up (Kubernetes mode)")
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
	fs.Visit(func(f *flag.Flag) {
		if etcdflags.IsEtcdFlag(f.Name) {
			o.etcdGiven = append(o.etcdGiven, "-"+f.Name)
		}
	})
	if err := o.check(); err != nil {
		return o, err
	}
	if o.kube.Enabled {
		if err := checkKubeEnv(getenv); err != nil {
			return o, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	return o, nil
}

// checkKubeEnv checks the two environment variables flanneld's manifests
// set in Kubernetes mode, which weftd reads for compatibility only:
//
//   - EVENT_QUEUE_DEPTH sizes flanneld's channel of lease events (5000).
//     weftd has no such queue (changes fold into the agent's peer set,
//     whatever their number), but a value flanneld would stop on stops
//     weftd too, so that a manifest that starts one starts the other.
//   - CONT_WHEN_CACHE_NOT_READY lets flanneld go on when its first Node
//     listing times out. weftd never gives up on the first listing: it
//     retries, not ready, with /readyz saying why; both values behave alike.
func checkKubeEnv(getenv func(string) string) error {
	if v := getenv("EVENT_QUEUE_DEPTH"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			return fmt.Errorf("EVENT_QUEUE_DEPTH=%q: want a number of events, 0 or more (flanneld's lease event queue; weftd has none, but refuses what flanneld refuses)", v)
		}
	}
	if v := getenv("CONT_WHEN_CACHE_NOT_READY"); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("CONT_WHEN_CACHE_NOT_READY=%q: want true or false", v)
		}
	}
	return nil
}

func (o *options) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
	}
	if o.kube.Enabled {
		if err := o.kube.Check(); err != nil {
			return bad("%v", err)
		}
	} else if err := o.etcd.Check(); err != nil {
		return bad("%v", err)
	}
	if err := o.node.Check(); err != nil {
		return bad("%v", err)
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

func (o *options) healthzAddr() string { return o.node.HealthzAddr() }
