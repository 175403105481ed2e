// Package etcdflags defines flanneld's etcd flags (-etcd-endpoints,
// -etcd-prefix, TLS files, username and password) once, for weftd and the
// weft CLI, with the FLANNELD_* environment variables that stand in for them.
package etcdflags

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/weftnet/weft/subnet/etcd"
)

// Defaults, as flanneld's.
const (
	DefaultEndpoints = "http://127.0.0.1:4001,http://127.0.0.1:2379"
	DefaultPrefix    = "/coreos.com/network"
)

// Flags holds the values of the etcd flags.
type Flags struct {
	Endpoints                 string
	Prefix                    string
	CAFile, CertFile, KeyFile string
	Username, Password        string
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Endpoints, "etcd-endpoints", DefaultEndpoints, "a comma-delimited list of etcd endpoints")
	fs.StringVar(&f.Prefix, "etcd-prefix", DefaultPrefix, "etcd prefix of the network config and leases")
	fs.StringVar(&f.CAFile, "etcd-cafile", "", "SSL Certificate Authority file used to secure etcd communication")
	fs.StringVar(&f.CertFile, "etcd-certfile", "", "SSL certification file used to secure etcd communication")
	fs.StringVar(&f.KeyFile, "etcd-keyfile", "", "SSL key file used to secure etcd communication")
	fs.StringVar(&f.Username, "etcd-username", "", "username for BasicAuth to etcd")
	fs.StringVar(&f.Password, "etcd-password", "", "password for BasicAuth to etcd")
}

// EnvName returns the environment variable that stands in for a flag:
// FLANNELD_ETCD_ENDPOINTS for -etcd-endpoints.
func EnvName(flagName string) string {
	return "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FromEnv sets every flag of fs that the command line did not set and whose
// FLANNELD_* variable getenv knows; only flags named by keep (nil: all).
func FromEnv(fs *flag.FlagSet, getenv func(string) string, keep func(name string) bool) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		if set[fl.Name] || (keep != nil && !keep(fl.Name)) {
			return
		}
		name := EnvName(fl.Name)
		if v := getenv(name); v != "" {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// IsEtcdFlag reports whether name is one of the flags Register defines.
func IsEtcdFlag(name string) bool { return strings.HasPrefix(name, "etcd-") }

// EndpointList splits Endpoints.
func (f Flags) EndpointList() []string {
	var out []string
	for _, e := range strings.Split(f.Endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// Check says what is wrong with the values, naming the flag.
func (f Flags) Check() error {
	eps := f.EndpointList()
	if len(eps) == 0 {
		return errors.New("-etcd-endpoints is empty")
	}
	for _, e := range eps {
		if !strings.Contains(e, "://") {
			return fmt.Errorf("-etcd-endpoints: %q is not a URL such as http://127.0.0.1:2379", e)
		}
	}
	if !strings.HasPrefix(f.Prefix, "/") {
		return fmt.Errorf("-etcd-prefix %q must start with /", f.Prefix)
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("-etcd-certfile and -etcd-keyfile go together")
	}
	return nil
}

// StoreOptions returns the etcd store's connection options as the flags
// say; the caller adds the rest (TTL, logger, validators, hooks).
func (f Flags) StoreOptions(dialTimeout time.Duration) etcd.Options {
	return etcd.Options{
		Endpoints:   f.EndpointList(),
		Prefix:      f.Prefix,
		CAFile:      f.CAFile,
		CertFile:    f.CertFile,
		KeyFile:     f.KeyFile,
		Username:    f.Username,
		Password:    f.Password,
		DialTimeout: dialTimeout,
	}
}
