// Package etcdtest runs real etcd servers in-process for tests: a single
// member (Start) or a cluster (StartCluster), each in t.TempDir(), listening
// on 127.0.0.1 with free ports, with quiet logging and cleanup through
// t.Cleanup. A server can be stopped and restarted on the same ports and data
// directory, compacted, and served over TLS or with authentication enabled.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startTimeout bounds how long a member may take to become ready.
const startTimeout = 30 * time.Second

// Option configures Start and StartCluster.
type Option func(*options)

type options struct {
	clientAddr   string
	certs        *Certs
	rootPassword string
}

// WithClientAddr makes a single server listen for clients on hostport
// (e.g. "10.0.0.1:2379") instead of a free port on 127.0.0.1.
func WithClientAddr(hostport string) Option {
	return func(o *options) { o.clientAddr = hostport }
}

// WithTLS serves clients over TLS with the given certificates and requires
// client certificates signed by its CA. Server.Client uses the client
// certificate.
func WithTLS(c *Certs) Option {
	return func(o *options) { o.certs = c }
}

// WithAuth enables etcd authentication with a "root" user having the given
// password. Server.Client is authenticated as root.
func WithAuth(rootPassword string) Option {
	return func(o *options) { o.rootPassword = rootPassword }
}

// Server is one embedded etcd member.
type Server struct {
	t    testing.TB
	opts options
	name string
	dir  string
	// ClientURL is the member's client URL, e.g. "http://127.0.0.1:40123".
	ClientURL string
	peerURL   string
	cluster   string // initial-cluster string
	state     string // initial-cluster-state

	mu     sync.Mutex
	etcd   *embed.Etcd
	client *clientv3.Client
}

// Start runs a single-member etcd for the test and returns it once it serves
// requests. It is stopped and its client closed at cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	s := newServer(t, o, "m0", o.clientAddr)
	s.cluster = s.name + "=" + s.peerURL
	s.state = embed.ClusterStateFlagNew
	t.Cleanup(s.shutdown)
	for attempt := 1; ; attempt++ {
		err := s.tryStart()
		if err == nil {
			break
		}
		// A port freeAddr found free can be taken before etcd binds it
		// (test packages run in parallel): take new ones.
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting etcd member %s (%s): %v", s.name, s.ClientURL, err)
		}
		t.Logf("starting etcd member %s: %v; again on new ports", s.name, err)
		s.dir = filepath.Join(t.TempDir(), s.name)
		s.peerURL = "http://" + freeAddr(t)
		s.cluster = s.name + "=" + s.peerURL
		if o.clientAddr == "" {
			s.ClientURL = strings.SplitAfter(s.ClientURL, "://")[0] + freeAddr(t)
		}
	}
	s.waitReady()
	if o.rootPassword != "" {
		s.enableAuth()
	}
	return s
}

func newServer(t testing.TB, o options, name, clientAddr string) *Server {
	scheme := "http"
	if o.certs != nil {
		scheme = "https"
	}
	if clientAddr == "" {
		clientAddr = freeAddr(t)
	}
	return &Server{
		t:         t,
		opts:      o,
		name:      name,
		dir:       filepath.Join(t.TempDir(), name),
		ClientURL: scheme + "://" + clientAddr,
		peerURL:   "http://" + freeAddr(t),
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func mustURL(t testing.TB, s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parsing URL %q: %v", s, err)
	}
	return *u
}

func (s *Server) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = s.name
	cfg.Dir = s.dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger())
	cfg.UnsafeNoFsync = true
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.BcryptCost = 4 // bcrypt.MinCost: keep auth tests fast
	cu := mustURL(s.t, s.ClientURL)
	pu := mustURL(s.t, s.peerURL)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = s.cluster
	cfg.InitialClusterToken = "etcdtest"
	cfg.ClusterState = s.state
	if s.opts.certs != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       s.opts.certs.ServerCertFile,
			KeyFile:        s.opts.certs.ServerKeyFile,
			TrustedCAFile:  s.opts.certs.CAFile,
			ClientCertAuth: true,
		}
	}
	return cfg
}

// start launches the member without waiting for it to join a quorum.
func (s *Server) start() {
	s.t.Helper()
	if err := s.tryStart(); err != nil {
		s.t.Fatalf("starting etcd member %s (%s): %v", s.name, s.ClientURL, err)
	}
}

// tryStart is start, returning the error.
func (s *Server) tryStart() error {
	e, err := embed.StartEtcd(s.config())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

func (s *Server) waitReady() {
	s.t.Helper()
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		s.t.Fatalf("etcd member %s failed: %v", s.name, err)
	case <-time.After(startTimeout):
		e.Server.Stop()
		s.t.Fatalf("etcd member %s not ready after %v", s.name, startTimeout)
	}
}

// Endpoints returns the member's client endpoints.
func (s *Server) Endpoints() []string { return []string{s.ClientURL} }

// ClientConfig returns a client config for this member's endpoints, with TLS
// and root credentials when the server uses them, and a silent logger.
func (s *Server) ClientConfig() clientv3.Config {
	return clientConfig(s.t, s.Endpoints(), s.opts)
}

func clientConfig(t testing.TB, endpoints []string, o options) clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if o.certs != nil {
		tc, err := transport.TLSInfo{
			CertFile:      o.certs.ClientCertFile,
			KeyFile:       o.certs.ClientKeyFile,
			TrustedCAFile: o.certs.CAFile,
		}.ClientConfig()
		if err != nil {
			t.Fatalf("building client TLS config: %v", err)
		}
		cfg.TLS = tc
	}
	if o.rootPassword != "" {
		cfg.Username, cfg.Password = "root", o.rootPassword
	}
	return cfg
}

// Client returns a client connected to the member, created on first use and
// closed at cleanup. It survives Stop/Restart (it reconnects).
func (s *Server) Client() *clientv3.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = newClient(s.t, s.ClientConfig())
	}
	return s.client
}

// NewClient returns a fresh client for the given config, closed at cleanup.
func NewClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	return newClient(t, cfg)
}

func newClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("connecting to etcd %v: %v", cfg.Endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the member down, keeping its ports and data directory for
// Restart. Stopping a stopped member does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped member again on the same ports and data
// directory and waits until it is ready.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.state = embed.ClusterStateFlagExisting
	// The old listeners may linger for a moment after Close.
	var err error
	for i := 0; i < 50; i++ {
		var e *embed.Etcd
		e, err = embed.StartEtcd(s.config())
		if err == nil {
			s.mu.Lock()
			s.etcd = e
			s.mu.Unlock()
			s.waitReady()
			return
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restarting etcd member %s: %v", s.name, err)
}

// Running reports whether the member is started.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.etcd != nil
}

// Compact compacts the member's keyspace at its current revision (physically)
// and returns that revision.
func (s *Server) Compact(ctx context.Context) int64 {
	s.t.Helper()
	return compact(ctx, s.t, s.Client())
}

// CompactAt compacts the keyspace at revision rev.
func (s *Server) CompactAt(ctx context.Context, rev int64) {
	s.t.Helper()
	if _, err := s.Client().Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		s.t.Fatalf("compacting etcd at revision %d: %v", rev, err)
	}
}

func compact(ctx context.Context, t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatalf("reading etcd revision: %v", err)
	}
	rev := resp.Header.Revision
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compacting etcd at revision %d: %v", rev, err)
	}
	return rev
}

func (s *Server) enableAuth() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noAuth := s.opts
	noAuth.rootPassword = ""
	c := newClient(s.t, clientConfig(s.t, s.Endpoints(), noAuth))
	if _, err := c.UserAdd(ctx, "root", s.opts.rootPassword); err != nil {
		s.t.Fatalf("adding etcd root user: %v", err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		s.t.Fatalf("granting etcd root role: %v", err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		s.t.Fatalf("enabling etcd auth: %v", err)
	}
	c.Close()
}

func (s *Server) shutdown() {
	s.mu.Lock()
	c := s.client
	s.client = nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
	s.Stop()
}

// quietLogger logs etcd's errors to stderr, except the ones every shutdown
// produces (listeners closing under their accept loops).
func quietLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.ErrorLevel)
	return zap.New(shutdownFilter{core})
}

// shutdownFilter drops the errors etcd logs when it is closed on purpose.
type shutdownFilter struct{ zapcore.Core }

func (f shutdownFilter) With(fields []zapcore.Field) zapcore.Core {
	return shutdownFilter{f.Core.With(fields)}
}

func (f shutdownFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if strings.HasPrefix(e.Message, "setting up serving from embedded etcd failed") {
		return ce
	}
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

// Cluster is a multi-member embedded etcd cluster.
type Cluster struct {
	t testing.TB
	// Members are the cluster's members, in creation order.
	Members []*Server

	mu     sync.Mutex
	client *clientv3.Client
}

// StartCluster runs an n-member etcd cluster and returns it once every
// member is ready. Options apply to every member (WithClientAddr is ignored).
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	o.clientAddr = ""
	c := &Cluster{t: t}
	var peers []string
	for i := 0; i < n; i++ {
		m := newServer(t, o, fmt.Sprintf("m%d", i), "")
		c.Members = append(c.Members, m)
		peers = append(peers, m.name+"="+m.peerURL)
	}
	t.Cleanup(c.shutdown)
	for _, m := range c.Members {
		m.cluster = strings.Join(peers, ",")
		m.state = embed.ClusterStateFlagNew
		m.start()
	}
	for _, m := range c.Members {
		m.waitReady()
	}
	if o.rootPassword != "" {
		c.Members[0].enableAuth()
	}
	return c
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// ClientConfig returns a client config listing every member.
func (c *Cluster) ClientConfig() clientv3.Config {
	return clientConfig(c.t, c.Endpoints(), c.Members[0].opts)
}

// Client returns a client that knows every member, closed at cleanup.
func (c *Cluster) Client() *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = newClient(c.t, c.ClientConfig())
	}
	return c.client
}

// Compact compacts the cluster's keyspace at its current revision.
func (c *Cluster) Compact(ctx context.Context) int64 {
	c.t.Helper()
	return compact(ctx, c.t, c.Client())
}

func (c *Cluster) shutdown() {
	c.mu.Lock()
	cl := c.client
	c.client = nil
	c.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
	var wg sync.WaitGroup
	for _, m := range c.Members {
		wg.Go(m.shutdown)
	}
	wg.Wait()
}

// NewClientErr returns a fresh client for cfg, or the error from connecting;
// the caller closes it.
func NewClientErr(cfg clientv3.Config) (*clientv3.Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return clientv3.New(cfg)
}
