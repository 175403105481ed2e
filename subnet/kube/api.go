package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// API is the part of the Kubernetes API the store uses: Nodes (list,
// watch, get, patch) and one Pod read for the node name.
type API interface {
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	GetNode(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
	// PatchNode patches nodes/<name>, or nodes/<name>/<subresource>.
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource ...string) (*corev1.Node, error)
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// CreateNode registers a Node (the lab, standing in for kubelets).
	CreateNode(ctx context.Context, n *corev1.Node) (*corev1.Node, error)
}

// restAPI implements API with a REST client for the core/v1 group only. It
// does not use client-go's generated clientset, which links every API group
// and their apply configurations into the binary (tens of megabytes of
// text, most of it paged in at start).
type restAPI struct {
	rc *rest.RESTClient
	pc runtime.ParameterCodec
}

// NewAPI returns an API over the given client config.
func NewAPI(cfg *rest.Config) (API, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.ContentType == "" {
		c.ContentType = runtime.ContentTypeJSON
	}
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("client for the Kubernetes API at %s: %w", cfg.Host, err)
	}
	return &restAPI{rc: rc, pc: runtime.NewParameterCodec(scheme)}, nil
}

func (a *restAPI) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := a.rc.Get().Resource("nodes").VersionedParams(&opts, a.pc).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return a.rc.Get().Resource("nodes").VersionedParams(&opts, a.pc).Watch(ctx)
}

func (a *restAPI) GetNode(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := a.rc.Get().Resource("nodes").Name(name).VersionedParams(&opts, a.pc).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource ...string) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := a.rc.Patch(pt).Resource("nodes").Name(name).SubResource(subresource...).Body(data).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := a.rc.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) CreateNode(ctx context.Context, n *corev1.Node) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := a.rc.Post().Resource("nodes").Body(n).Do(ctx).Into(out)
	return out, err
}
