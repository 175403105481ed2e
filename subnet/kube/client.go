package kube

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig builds the client config as flanneld does: the kubeconfig file
// when given (apiURL, if set, overrides its server), apiURL alone, or the
// in-cluster config (service-account token, KUBERNETES_SERVICE_HOST/PORT)
// when both are empty. Unlike flanneld it does not fall back to a default
// config when the in-cluster one is missing: it says which flag to give.
// Requests use protobuf, the cheaper encoding for Node lists.
func RESTConfig(apiURL, kubeconfig, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if apiURL == "" && kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("not running in a pod (%v): give -kubeconfig-file or -kube-api-url", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("client config for the Kubernetes API (-kubeconfig-file %q, -kube-api-url %q): %w", kubeconfig, apiURL, err)
		}
	}
	cfg.UserAgent = userAgent
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return cfg, nil
}

// NodeName returns this node's name as flanneld finds it: $NODE_NAME, else
// the spec.nodeName of the pod $POD_NAMESPACE/$POD_NAME.
func NodeName(ctx context.Context, cs API, getenv func(string) string) (string, error) {
	if n := getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	name, ns := getenv("POD_NAME"), getenv("POD_NAMESPACE")
	if name == "" || ns == "" {
		return "", errors.New("the node name is unknown: set NODE_NAME, or POD_NAME and POD_NAMESPACE (the DaemonSet sets them from the pod's fieldRef)")
	}
	pod, err := cs.GetPod(ctx, ns, name)
	if err != nil {
		return "", fmt.Errorf("reading pod %s/%s (POD_NAMESPACE/POD_NAME) for its node name: %w", ns, name, err)
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s has no spec.nodeName", ns, name)
	}
	return pod.Spec.NodeName, nil
}
