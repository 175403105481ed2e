package lab

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdOptions configures the lab's etcd process (weft lab etcd).
type EtcdOptions struct {
	// StateDir is the lab's state dir; data lives in <StateDir>/etcd.
	StateDir string
	// ClientURLs are the client URLs to listen on (bridge and loopback).
	ClientURLs []string
	// PeerURL is the peer URL (loopback; the lab has one member).
	PeerURL string
}

// RunEtcd runs the lab's single-member etcd until ctx ends. It is what the
// hidden "weft lab etcd" subcommand runs in the detached lab process.
func RunEtcd(ctx context.Context, o EtcdOptions) error {
	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = filepath.Join(o.StateDir, "etcd")
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = true // a lab is thrown away, never recovered
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	var cus []url.URL
	for _, s := range o.ClientURLs {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("client URL %q: %w", s, err)
		}
		cus = append(cus, *u)
	}
	pu, err := url.Parse(o.PeerURL)
	if err != nil {
		return fmt.Errorf("peer URL %q: %w", o.PeerURL, err)
	}
	cfg.ListenClientUrls = cus
	cfg.AdvertiseClientUrls = cus
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.InitialClusterToken = "weft-lab"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd on %v: %w", o.ClientURLs, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// preferring want.
func freePort(want int) (int, error) {
	if want > 0 {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(want)); err == nil {
			l.Close()
			return want, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// etcdClient returns a client of the lab's etcd on loopback.
func etcdClient(port int) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://127.0.0.1:" + strconv.Itoa(port)},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to the lab's etcd on port %d: %w", port, err)
	}
	return c, nil
}

// waitEtcd polls the lab's etcd until it answers, the process pid exits
// (exited closes), or ctx ends.
func waitEtcd(ctx context.Context, c *clientv3.Client, pid int, exited <-chan struct{}, logPath string) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := c.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the lab's etcd (pid %d) exited; the end of %s:\n%s", pid, logPath, tail(logPath, 10))
		case <-ctx.Done():
			return fmt.Errorf("waiting for the lab's etcd: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
