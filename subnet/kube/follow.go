package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// The store follows the Nodes itself (a paged list, then a watch from its
// resource version with bookmarks, a fresh list when the version is too
// old) rather than through a client-go informer, for three reasons: it
// keeps only a nodeInfo per Node (name, podCIDRs, the prefixed
// annotations), not even a stripped Node object; it knows at every moment
// whether its watch is live, which readiness reports; and it reconnects
// within followBackoffMax of the apiserver's return, where a reflector's
// backoff grows to 30 s.
const (
	followBackoffMin = 100 * time.Millisecond
	followBackoffMax = 2 * time.Second
	listPageSize     = 500
	// freeAfterList is the list size from which the store returns the
	// decoded list's memory to the OS right away.
	freeAfterList = 500
)

// errGone means the watch's resource version is too old: list again.
var errGone = errors.New("resource version too old")

// follow lists and watches the Nodes until ctx ends.
func (s *Store) follow(ctx context.Context) {
	wait := followBackoffMin
	for ctx.Err() == nil {
		rv, n, err := s.list(ctx)
		if err == nil {
			if n >= freeAfterList {
				// The decoded list (kubelet-sized Nodes, several KB each)
				// is garbage now; hand it back to the OS at once rather
				// than over minutes.
				debug.FreeOSMemory()
			}
			s.markSynced()
			wait = followBackoffMin
			for err == nil {
				// A watch ends when the apiserver closes it (its timeout,
				// a restart); go on from the last version seen.
				rv, err = s.watch(ctx, rv)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errGone) {
			continue // a routine relist, not an outage
		}
		s.setWatching(false, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, followBackoffMax)
	}
}

// list reads every Node, page by page, replaces the store's view with it
// (queueing what changed, deletions included) and returns the list's
// resource version.
func (s *Store) list(ctx context.Context) (rv string, nodes int, err error) {
	seen := make(map[string]bool)
	var cont string
	for {
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		opts := metav1.ListOptions{Limit: listPageSize, Continue: cont}
		if cont == "" {
			// From the apiserver's watch cache (no etcd read); later pages
			// follow the continue token.
			opts.ResourceVersion = "0"
		}
		l, err := s.cs.ListNodes(lctx, opts)
		cancel()
		if err != nil {
			return "", 0, fmt.Errorf("listing nodes: %w", err)
		}
		for i := range l.Items {
			info := toInfo(&l.Items[i], s.ann.Prefix, s.name)
			seen[info.name] = true
			s.put(info.name, info)
		}
		rv, cont = l.ResourceVersion, l.Continue
		if cont == "" {
			break
		}
	}
	for _, name := range s.names() {
		if !seen[name] {
			s.put(name, nil)
		}
	}
	return rv, len(seen), nil
}

// watch follows the Nodes from rv until the watch ends, and returns the
// last resource version seen. It returns a nil error when the apiserver
// closed the watch normally.
func (s *Store) watch(ctx context.Context, rv string) (string, error) {
	timeout := int64(300 + rand.IntN(300))
	w, err := s.cs.WatchNodes(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout})
	if err != nil {
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return rv, errGone
		}
		return rv, fmt.Errorf("watching nodes: %w", err)
	}
	defer w.Stop()
	s.setWatching(true, nil)
	for {
		select {
		case <-ctx.Done():
			return rv, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return rv, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				n, ok := ev.Object.(*corev1.Node)
				if !ok {
					continue
				}
				rv = n.ResourceVersion
				if ev.Type == watch.Deleted {
					s.put(n.Name, nil)
				} else {
					s.put(n.Name, toInfo(n, s.ann.Prefix, s.name))
				}
			case watch.Bookmark:
				if n, ok := ev.Object.(*corev1.Node); ok {
					rv = n.ResourceVersion
				}
			case watch.Error:
				st, _ := ev.Object.(*metav1.Status)
				if st != nil && (st.Code == http.StatusGone || st.Reason == metav1.StatusReasonExpired || st.Reason == metav1.StatusReasonGone) {
					return rv, errGone
				}
				if st != nil {
					return rv, fmt.Errorf("watching nodes: %s", strings.TrimSpace(st.Message))
				}
				return rv, errors.New("watching nodes: an error event")
			}
		}
	}
}

// toInfo keeps what the store needs of a Node: its name, podCIDRs, the
// annotations under prefix and, for the own node, the NetworkUnavailable
// condition. A 5,000-node cluster then costs a few hundred bytes per node
// instead of whole kubelet-sized objects.
//
// The strings are copied: the decoded Node (and the whole list response
// it came in) is then garbage as a block, instead of pinning the memory
// around each small string it shares with the store.
func toInfo(n *corev1.Node, prefix, own string) *nodeInfo {
	info := &nodeInfo{name: strings.Clone(n.Name)}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 0 {
		info.podCIDRs = make([]string, len(cidrs))
		for i, c := range cidrs {
			info.podCIDRs[i] = strings.Clone(c)
		}
	}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, prefix) {
			if info.annotations == nil {
				info.annotations = make(map[string]string, 4)
			}
			info.annotations[internKey(k)] = strings.Clone(v)
		}
	}
	if n.Name == own {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				info.netUnavailable, info.netReason = string(c.Status), c.Reason
			}
		}
	}
	return info
}

// knownKeys holds one copy of each annotation key seen, so that 5,000
// Nodes share four key strings.
var (
	knownKeysMu sync.Mutex
	knownKeys   = map[string]string{}
)

func internKey(k string) string {
	knownKeysMu.Lock()
	defer knownKeysMu.Unlock()
	if c, ok := knownKeys[k]; ok {
		return c
	}
	if len(knownKeys) > 64 {
		return strings.Clone(k) // odd keys under the prefix: do not grow
	}
	c := strings.Clone(k)
	knownKeys[c] = c
	return c
}
