// Package kubeflags defines, once, weftd's Kubernetes-mode flags
// (flanneld's -kube-subnet-mgr, -kube-api-url, -kubeconfig-file,
// -kube-annotation-prefix and -net-config-path), for weftd and for the weft
// commands that look at a Kubernetes-mode node (doctor, leases, node
// teardown), so that they find the apiserver, the annotations and
// net-conf.json where weftd does.
package kubeflags

import (
	"errors"
	"flag"

	"github.com/weftnet/weft/subnet/kube"
)

// Flags holds the values of the Kubernetes-mode flags.
type Flags struct {
	Enabled          bool
	APIURL           string
	Kubeconfig       string
	AnnotationPrefix string
	NetConfPath      string
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.BoolVar(&f.Enabled, "kube-subnet-mgr", false, "contact the Kubernetes API for subnet assignment instead of etcd (each node's subnet is its Node's podCIDR)")
	fs.StringVar(&f.APIURL, "kube-api-url", "", "Kubernetes API server URL (default: from -kubeconfig-file, or in-cluster)")
	fs.StringVar(&f.Kubeconfig, "kubeconfig-file", "", "kubeconfig file location (default: the in-cluster config)")
	fs.StringVar(&f.AnnotationPrefix, "kube-annotation-prefix", kube.DefaultAnnotationPrefix, "prefix of the node annotations weftd reads and writes in Kubernetes mode")
	fs.StringVar(&f.NetConfPath, "net-config-path", kube.DefaultNetConfPath, "path to the network config file in Kubernetes mode")
}

// IsKubeFlag reports whether name is one of the flags Register defines.
func IsKubeFlag(name string) bool {
	switch name {
	case "kube-subnet-mgr", "kube-api-url", "kubeconfig-file", "kube-annotation-prefix", "net-config-path":
		return true
	}
	return false
}

// Check says what is wrong with the values, naming the flag (only in
// Kubernetes mode: otherwise the flags are not used).
func (f *Flags) Check() error {
	if !f.Enabled {
		return nil
	}
	if _, err := kube.NewAnnotations(f.AnnotationPrefix); err != nil {
		return err
	}
	if f.NetConfPath == "" {
		return errors.New("-net-config-path is empty")
	}
	return nil
}

// Annotations returns the annotation keys of -kube-annotation-prefix (the
// zero value when it is invalid: call Check first).
func (f *Flags) Annotations() kube.Annotations {
	a, _ := kube.NewAnnotations(f.AnnotationPrefix)
	return a
}

// API returns a client of the apiserver the flags name (kube.RESTConfig's
// rules: the kubeconfig file, the URL, or the in-cluster config) and the
// apiserver's URL, identifying itself as userAgent.
func (f *Flags) API(userAgent string) (kube.API, string, error) {
	rc, err := kube.RESTConfig(f.APIURL, f.Kubeconfig, userAgent)
	if err != nil {
		return nil, "", err
	}
	api, err := kube.NewAPI(rc)
	if err != nil {
		return nil, rc.Host, err
	}
	return api, rc.Host, nil
}
