// Package dist holds what ships Weft to a node: the Kubernetes manifests
// (kubernetes/weft.yaml for etcd mode, kubernetes/weft-kube.yaml for
// Kubernetes mode), the container image (Dockerfile and its entrypoint), the
// systemd unit with its example environment file, the stock CNI conflist,
// and install.sh for hosts without Kubernetes.
//
// The package has no code of its own; its tests hold those files to the
// code they describe: each manifest decodes strictly into the Kubernetes API
// types and is wired to the paths and ports the binaries use, the two
// manifests differ only in what their modes need, the Dockerfile copies only
// what the Makefile builds, and the installer lays files out where the unit
// and the documentation say they are.
package dist
