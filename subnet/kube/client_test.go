package kube

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// podAPI answers GetPod only (NodeName's one request).
type podAPI struct {
	API
	pods map[string]*corev1.Pod
}

func (p podAPI) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if pod, ok := p.pods[ns+"/"+name]; ok {
		return pod, nil
	}
	return nil, errors.New("not found")
}

func TestNodeName(t *testing.T) {
	api := podAPI{pods: map[string]*corev1.Pod{
		"kube-flannel/weft-abcde": {Spec: corev1.PodSpec{NodeName: "node-7"}},
		"kube-flannel/pending":    {},
	}}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
		err  string
	}{
		{"NODE_NAME wins", map[string]string{"NODE_NAME": "n1", "POD_NAME": "weft-abcde", "POD_NAMESPACE": "kube-flannel"}, "n1", ""},
		{"from the pod", map[string]string{"POD_NAME": "weft-abcde", "POD_NAMESPACE": "kube-flannel"}, "node-7", ""},
		{"nothing set", nil, "", "set NODE_NAME, or POD_NAME and POD_NAMESPACE"},
		{"namespace missing", map[string]string{"POD_NAME": "weft-abcde"}, "", "set NODE_NAME"},
		{"no such pod", map[string]string{"POD_NAME": "gone", "POD_NAMESPACE": "kube-flannel"}, "", "reading pod kube-flannel/gone"},
		{"pod not scheduled", map[string]string{"POD_NAME": "pending", "POD_NAMESPACE": "kube-flannel"}, "", "no spec.nodeName"},
	} {
		got, err := NodeName(context.Background(), api, func(k string) string { return tc.env[k] })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %q, %v; want an error with %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestRESTConfigOutsideACluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := RESTConfig("", "", "weftd/test"); err == nil || !strings.Contains(err.Error(), "give -kubeconfig-file or -kube-api-url") {
		t.Errorf("err %v", err)
	}
	if _, err := RESTConfig("", "/nonexistent/kubeconfig", "weftd/test"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("err %v", err)
	}
	c, err := RESTConfig("https://192.0.2.1:6443", "", "weftd/test")
	if err != nil || c.Host != "https://192.0.2.1:6443" || c.ContentType != "application/vnd.kubernetes.protobuf" || c.UserAgent != "weftd/test" {
		t.Errorf("config %+v, %v", c, err)
	}
}
