// Package etcd is the etcd store behind subnet.Manager: it reads the network
// config at <prefix>/config, leases subnets under <prefix>/subnets/ in
// flannel's layout (create-if-absent transactions bound to an etcd lease,
// renewed by keep-alive of that same lease), respects reservations (keys with
// no etcd lease), and turns the subnets prefix into a stream of validated
// lease events that survives compaction and etcd restarts. It never touches
// the kernel.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/weftnet/weft/internal/logonce"
	"github.com/weftnet/weft/subnet"
)

// DefaultPrefix is flannel's default etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// DefaultTTL is the time to live of a lease's etcd lease, as in flanneld.
const DefaultTTL = 24 * time.Hour

// ErrNoFreeSubnet is subnet.ErrNoFreeSubnet, repeated here for callers that
// use this package directly; errors.Is matches either name.
var ErrNoFreeSubnet = subnet.ErrNoFreeSubnet

// ErrConfigDeleted is passed to WatchConfig's callback when the config key
// is deleted.
var ErrConfigDeleted = errors.New("network config deleted from etcd")

// Options configures a Store. Only Endpoints is required by New.
type Options struct {
	// Endpoints are the etcd client URLs, e.g. "https://10.0.0.1:2379".
	Endpoints []string
	// Prefix is the key prefix; DefaultPrefix when empty.
	Prefix string
	// CAFile, CertFile and KeyFile enable TLS: the CA that signed the
	// servers' certificates, and the client certificate and key (optional).
	CAFile, CertFile, KeyFile string
	// TLS, when not nil, is used as is instead of the files above.
	TLS *tls.Config
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// DialTimeout bounds the initial connection; 5 s when zero.
	DialTimeout time.Duration
	// TTL is the default time to live of a lease (DefaultTTL when zero).
	TTL time.Duration
	// Logger receives the store's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Validator checks the backend data of every lease read from etcd.
	Validator subnet.DataValidator
	// ValidatorFor, when not nil, builds the validator from the network
	// config being watched (backend data may depend on it, e.g. the VNI);
	// it takes precedence over Validator.
	ValidatorFor func(*subnet.Config) subnet.DataValidator

	// BackoffMin and BackoffMax bound the capped exponential backoff used
	// while etcd is unreachable or the config is missing (100 ms and 10 s
	// when zero).
	BackoffMin, BackoffMax time.Duration
	// LeaseCheckInterval is how often KeepLease asks etcd how much of the
	// lease's TTL is left (1 min, or a third of the TTL if shorter, when zero).
	LeaseCheckInterval time.Duration

	// ObserveRequest, when not nil, is called after every etcd request with
	// the operation's name ("get", "txn", "grant", "keepalive", "ttl",
	// "revoke") and its latency, e.g. to feed a Prometheus histogram.
	ObserveRequest func(op string, d time.Duration)
	// OnWatchRestart, when not nil, is called each time a lease or config
	// watch is re-established, with the reason ("compacted", "error").
	OnWatchRestart func(reason string)
	// OnWatchLive, when not nil, is called with true when the lease watch
	// has listed the leases and follows them, and with false when it lost
	// etcd and is retrying.
	OnWatchLive func(live bool)
	// LivenessInterval is how often an idle lease watch checks that etcd
	// is reachable (RequestProgress); 5 s when zero.
	LivenessInterval time.Duration

	// PrefetchLeases prepares an agent's start in GetNetworkConfig's round
	// trip: it lists the subnets in the same read transaction as the
	// config, and grants an etcd lease of TTL beside it. The next
	// LookupLease and the next AcquireLease use that listing instead of
	// making a Get of their own, and AcquireLease binds a new key to that
	// etcd lease instead of granting one, while they are younger than
	// prefetchMaxAge: at a new node's start, two round trips in a row
	// instead of five. Each uses them once; AcquireLease revokes an etcd
	// lease granted ahead that it did not need (a restarted node keeps its
	// own). A listing a moment old decides nothing a fresh one would not:
	// every key AcquireLease writes is written by a transaction guarded by
	// what it read, and a lost race lists afresh.
	PrefetchLeases bool
}

// prefetchMaxAge bounds the age of a listing that GetNetworkConfig read
// ahead (Options.PrefetchLeases) for LookupLease and AcquireLease to use.
const prefetchMaxAge = 2 * time.Second

// Store implements subnet.Manager on etcd v3.
type Store struct {
	cli       *clientv3.Client
	ownClient bool
	prefix    string
	configKey string
	subnets   string // <prefix>/subnets/
	ttl       time.Duration
	log       *slog.Logger
	validate  subnet.DataValidator
	validFor  func(*subnet.Config) subnet.DataValidator
	backMin   time.Duration
	backMax   time.Duration
	checkIvl  time.Duration
	observe   func(string, time.Duration)
	restarted func(string)
	live      func(bool)
	liveIvl   time.Duration

	prefetch bool
	preMu    sync.Mutex
	pre      *prefetched // the listing GetNetworkConfig read ahead, if any
	ahead    *grantAhead // the etcd lease it granted ahead, if any
}

// grantAhead is an etcd lease granted ahead of AcquireLease
// (Options.PrefetchLeases); its other fields are set when done is closed.
type grantAhead struct {
	ttl  time.Duration
	done chan struct{}
	id   clientv3.LeaseID
	at   time.Time // when it was asked for: its TTL runs from then
	err  error
}

// prefetched is a listing of the subnets prefix read ahead with the config,
// and which of its users have had it.
type prefetched struct {
	kvs             []*mvccpb.KeyValue
	rev             int64
	at              time.Time
	lookup, acquire bool // used by LookupLease, AcquireLease
}

var _ subnet.Manager = (*Store)(nil)

// New connects to etcd and returns a Store; Close releases the connection.
func New(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints given")
	}
	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		Username:    opts.Username,
		Password:    opts.Password,
		// The store logs through slog; silence the client's own zap logs.
		Logger: zap.NewNop(),
		// Detect a dead member quickly so that requests move to a live one.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	// gRPC's default reconnect backoff grows to 2 min: after a long etcd
	// outage the agent would lag that long behind the recovery. Cap it.
	backMin, backMax := opts.BackoffMin, opts.BackoffMax
	if backMin <= 0 {
		backMin = 100 * time.Millisecond
	}
	if backMax <= 0 {
		backMax = 10 * time.Second
	}
	cfg.DialOptions = []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: backMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: max(backMin, backMax)},
		MinConnectTimeout: cfg.DialTimeout,
	})}
	cfg.TLS = opts.TLS
	if cfg.TLS == nil && (opts.CAFile != "" || opts.CertFile != "" || opts.KeyFile != "") {
		tc, err := transport.TLSInfo{
			CertFile:      opts.CertFile,
			KeyFile:       opts.KeyFile,
			TrustedCAFile: opts.CAFile,
		}.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd store: loading TLS files (ca %q, cert %q, key %q): %w", opts.CAFile, opts.CertFile, opts.KeyFile, err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd store: connecting to %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	s := NewWithClient(cli, opts)
	s.ownClient = true
	return s, nil
}

// NewWithClient returns a Store using an existing client, which it does not
// close. Endpoint, TLS and credential options are ignored.
func NewWithClient(cli *clientv3.Client, opts Options) *Store {
	s := &Store{
		cli:       cli,
		prefix:    strings.TrimRight(opts.Prefix, "/"),
		ttl:       opts.TTL,
		log:       opts.Logger,
		validate:  opts.Validator,
		validFor:  opts.ValidatorFor,
		backMin:   opts.BackoffMin,
		backMax:   opts.BackoffMax,
		checkIvl:  opts.LeaseCheckInterval,
		observe:   opts.ObserveRequest,
		restarted: opts.OnWatchRestart,
		live:      opts.OnWatchLive,
		liveIvl:   opts.LivenessInterval,
		prefetch:  opts.PrefetchLeases,
	}
	if opts.Prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.liveIvl <= 0 {
		s.liveIvl = 5 * time.Second
	}
	if s.backMin <= 0 {
		s.backMin = 100 * time.Millisecond
	}
	if s.backMax <= 0 {
		s.backMax = 10 * time.Second
	}
	if s.backMax < s.backMin {
		s.backMax = s.backMin
	}
	s.configKey = s.prefix + "/config"
	s.subnets = SubnetsPrefix(s.prefix)
	return s
}

// watchLive reports the lease watch's state to OnWatchLive.
func (s *Store) watchLive(live bool) {
	if s.live != nil {
		s.live(live)
	}
}

// validator returns the lease data validator for cfg.
func (s *Store) validator(cfg *subnet.Config) subnet.DataValidator {
	if s.validFor != nil {
		return s.validFor(cfg)
	}
	return s.validate
}

// Close closes the etcd connection if New opened it.
func (s *Store) Close() error {
	if s.ownClient {
		return s.cli.Close()
	}
	return nil
}

// Client returns the store's etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the store's key prefix.
func (s *Store) Prefix() string { return s.prefix }

// track reports a request's latency to the ObserveRequest hook.
func (s *Store) track(op string, start time.Time) {
	if s.observe != nil {
		s.observe(op, time.Since(start))
	}
}

func (s *Store) watchRestarted(reason string) {
	if s.restarted != nil {
		s.restarted(reason)
	}
}

// backoff is a capped exponential backoff.
type backoff struct {
	min, max, cur time.Duration
}

func (s *Store) newBackoff() *backoff { return &backoff{min: s.backMin, max: s.backMax} }

// wait sleeps for the next backoff period or until ctx ends.
func (b *backoff) wait(ctx context.Context) error {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	t := time.NewTimer(b.cur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (b *backoff) reset() { b.cur = 0 }

// GetNetworkConfig reads and validates <prefix>/config. While the key is
// missing, invalid or etcd unreachable it retries with capped backoff,
// logging once each time the situation changes, until ctx ends.
func (s *Store) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	b := s.newBackoff()
	var failed logonce.Errors
	for {
		cfg, unknown, situation, err := s.readConfig(ctx)
		if err == nil {
			if failed.Cleared() {
				s.log.Info("network config found", "key", s.configKey)
			}
			if len(unknown) > 0 {
				s.log.Warn("network config has unknown fields; ignoring them", "key", s.configKey, "fields", unknown)
			}
			return cfg, nil
		}
		if failed.ChangedKey(situation) {
			s.log.Warn("waiting for the network config", "key", s.configKey, "reason", err)
		}
		if werr := b.wait(ctx); werr != nil {
			return nil, fmt.Errorf("waiting for network config at %s: %w (last problem: %v)", s.configKey, werr, err)
		}
	}
}

// readConfig reads the config once. situation names the kind of failure
// (and the invalid value) so that the caller logs only changes.
func (s *Store) readConfig(ctx context.Context) (cfg *subnet.Config, unknown []string, situation string, err error) {
	var kvs []*mvccpb.KeyValue
	if s.prefetch {
		kvs, err = s.readConfigAndLeases(ctx)
	} else {
		start := time.Now()
		var resp *clientv3.GetResponse
		resp, err = s.cli.Get(ctx, s.configKey)
		s.track("get", start)
		if err == nil {
			kvs = resp.Kvs
		}
	}
	if err != nil {
		return nil, nil, "unreachable", fmt.Errorf("reading %s: %w", s.configKey, err)
	}
	if len(kvs) == 0 {
		return nil, nil, "missing", fmt.Errorf("key %s does not exist", s.configKey)
	}
	cfg, unknown, err = subnet.ParseConfig(kvs[0].Value)
	if err != nil {
		return nil, nil, "invalid:" + err.Error(), fmt.Errorf("key %s: %w", s.configKey, err)
	}
	return cfg, unknown, "", nil
}

// readConfigAndLeases reads the config key and lists the subnets prefix in
// one read transaction; it keeps the listing for LookupLease and
// AcquireLease (Options.PrefetchLeases) and returns the config's key-values.
func (s *Store) readConfigAndLeases(ctx context.Context) ([]*mvccpb.KeyValue, error) {
	s.grantAhead()
	start := time.Now()
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.configKey), clientv3.OpGet(s.subnets, clientv3.WithPrefix())).Commit()
	s.track("txn", start)
	if err != nil {
		return nil, err
	}
	if len(resp.Responses) != 2 {
		return nil, fmt.Errorf("reading %s and listing %s: %d responses to 2 requests", s.configKey, s.subnets, len(resp.Responses))
	}
	s.preMu.Lock()
	s.pre = &prefetched{kvs: resp.Responses[1].GetResponseRange().GetKvs(), rev: resp.Header.Revision, at: start}
	s.preMu.Unlock()
	return resp.Responses[0].GetResponseRange().GetKvs(), nil
}

// grantAhead grants an etcd lease of the store's TTL in the background, for
// the next AcquireLease to bind its key to, unless one is already there.
func (s *Store) grantAhead() {
	s.preMu.Lock()
	defer s.preMu.Unlock()
	if s.ahead != nil {
		return
	}
	g := &grantAhead{ttl: s.ttl, done: make(chan struct{}), at: time.Now()}
	s.ahead = g
	go func() {
		defer close(g.done)
		ctx, cancel := context.WithTimeout(s.cli.Ctx(), 30*time.Second)
		defer cancel()
		resp, err := s.cli.Grant(ctx, ttlSeconds(g.ttl))
		s.track("grant", g.at)
		if err != nil {
			g.err = fmt.Errorf("granting an etcd lease of %v: %w", g.ttl, err)
			return
		}
		g.id = resp.ID
	}()
}

// takeGrantAhead returns the etcd lease granted ahead, if there is one of
// ttl granted less than prefetchMaxAge ago; it waits for the grant to
// answer. A grant that failed, or one of another TTL or too old, it drops
// (revoking it) and returns false.
func (s *Store) takeGrantAhead(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, time.Time, bool) {
	s.preMu.Lock()
	g := s.ahead
	s.ahead = nil
	s.preMu.Unlock()
	if g == nil {
		return 0, time.Time{}, false
	}
	if g.ttl != ttl || time.Since(g.at) > prefetchMaxAge {
		s.revokeAhead(g)
		return 0, time.Time{}, false
	}
	select {
	case <-g.done:
	case <-ctx.Done():
		s.revokeAhead(g)
		return 0, time.Time{}, false
	}
	if g.err != nil {
		s.log.Debug("the etcd lease granted ahead failed; granting one now", "err", g.err)
		return 0, time.Time{}, false
	}
	return g.id, g.at, true
}

// dropGrantAhead revokes an etcd lease granted ahead that no AcquireLease
// took.
func (s *Store) dropGrantAhead() {
	s.preMu.Lock()
	g := s.ahead
	s.ahead = nil
	s.preMu.Unlock()
	if g != nil {
		s.revokeAhead(g)
	}
}

// revokeAhead revokes g once its grant has answered, in the background:
// nobody waits for it.
func (s *Store) revokeAhead(g *grantAhead) {
	go func() {
		<-g.done
		if g.err == nil {
			s.revokeQuietly(int64(g.id))
		}
	}()
}

// takePrefetched returns the listing read ahead with the config, if one is
// there that this user (LookupLease or AcquireLease) has not had yet and
// that is younger than prefetchMaxAge.
func (s *Store) takePrefetched(acquire bool) (kvs []*mvccpb.KeyValue, rev int64, ok bool) {
	s.preMu.Lock()
	defer s.preMu.Unlock()
	p := s.pre
	if p == nil {
		return nil, 0, false
	}
	if time.Since(p.at) > prefetchMaxAge {
		s.pre = nil
		return nil, 0, false
	}
	used := &p.lookup
	if acquire {
		used = &p.acquire
	}
	if *used {
		return nil, 0, false
	}
	*used = true
	if p.lookup && p.acquire {
		s.pre = nil
	}
	return p.kvs, p.rev, true
}

// WatchConfig calls onChange whenever the stored config stops matching cfg
// (or the last config reported), including a deletion (ErrConfigDeleted) or
// an invalid value (the parse error), until ctx ends. It returns ctx's error.
func (s *Store) WatchConfig(ctx context.Context, cfg *subnet.Config, onChange func(*subnet.Config, error)) error {
	b := s.newBackoff()
	lastState := configState(cfg, nil)
	report := func(c *subnet.Config, err error) {
		st := configState(c, err)
		if st == lastState {
			return
		}
		lastState = st
		onChange(c, err)
	}
	failing := false
	for ctx.Err() == nil {
		start := time.Now()
		resp, err := s.cli.Get(ctx, s.configKey)
		s.track("get", start)
		if err != nil {
			if !failing && ctx.Err() == nil {
				s.log.Warn("watching the network config: etcd unreachable; retrying", "key", s.configKey, "err", err)
				failing = true
			}
			if b.wait(ctx) != nil {
				break
			}
			continue
		}
		if failing {
			s.log.Info("watching the network config: etcd reachable again", "key", s.configKey)
			failing = false
		}
		b.reset()
		if len(resp.Kvs) == 0 {
			report(nil, ErrConfigDeleted)
		} else {
			c, _, perr := subnet.ParseConfig(resp.Kvs[0].Value)
			report(c, perr)
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.configKey, clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					report(nil, ErrConfigDeleted)
					continue
				}
				c, _, perr := subnet.ParseConfig(ev.Kv.Value)
				report(c, perr)
			}
		}
		cancel()
		if ctx.Err() == nil {
			s.watchRestarted("error")
			if b.wait(ctx) != nil {
				break
			}
		}
	}
	return ctx.Err()
}

// configState summarises a config or error so that equal states compare equal.
func configState(c *subnet.Config, err error) string {
	if err != nil {
		return "error:" + err.Error()
	}
	if c == nil {
		return "nil"
	}
	return fmt.Sprintf("%v|%v|%v|%s|%d|%s|%s|%s|%d|%s|%s|%s|%s", c.EnableIPv4, c.EnableIPv6, c.EnableNFTables,
		c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, c.IPv6Network, c.IPv6SubnetLen,
		c.IPv6SubnetMin, c.IPv6SubnetMax, c.BackendType, canonicalJSON(c.Backend))
}

// SubnetsPrefix returns the key prefix under which the leases of the etcd
// prefix lie (flannel's <prefix>/subnets/), for a caller that watches the
// keys raw, such as a benchmark timing etcd's own notice.
func SubnetsPrefix(prefix string) string { return prefix + "/subnets/" }
