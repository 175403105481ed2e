package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the agent's Prometheus metrics, on a registry of its own.
type Metrics struct {
	Registry        *prometheus.Registry
	LeasesKnown     prometheus.Gauge
	PeersProgrammed prometheus.Gauge
	ReconcileRuns   prometheus.Counter
	ReconcileErrors prometheus.Counter
	ReconcileTime   prometheus.Histogram
	WatchRestarts   prometheus.Counter
	EtcdLatency     *prometheus.HistogramVec
	LeaseChanges    prometheus.Counter
	// InitialProgram and InitialProgramCPU describe the first programming
	// of the data plane after start (every peer listed at start, in one
	// backend Set): its wall time and the process's CPU time meanwhile.
	InitialProgram    prometheus.Gauge
	InitialProgramCPU prometheus.Gauge
	BackendInfo       *prometheus.GaugeVec
	// MemoryReleases counts the times the agent returned freed memory to
	// the OS after many lease changes (a burst, or a stream once quiet).
	MemoryReleases prometheus.Counter
}

// NewMetrics creates and registers the agent's metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		LeasesKnown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_leases_known", Help: "Valid leases in etcd known to this agent, its own included.",
		}),
		PeersProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_peers_programmed", Help: "Peers whose data plane entries the last reconcile programmed.",
		}),
		ReconcileRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_reconcile_runs_total", Help: "Backend reconciles run.",
		}),
		ReconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_reconcile_errors_total", Help: "Backend reconciles that reported an error.",
		}),
		ReconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_reconcile_duration_seconds", Help: "Time a backend reconcile took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		WatchRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_watch_restarts_total", Help: "Times the lease watch was re-established (etcd restart, compaction).",
		}),
		EtcdLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_etcd_request_duration_seconds", Help: "Latency of etcd requests by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"op"}),
		LeaseChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_own_lease_changes_total", Help: "Times this node's lease was lost and acquired again.",
		}),
		InitialProgram: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_initial_program_seconds", Help: "Wall time of the first programming of the data plane after start (every peer listed at start, one backend Set); 0 until the agent is first ready.",
		}),
		InitialProgramCPU: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_initial_program_cpu_seconds", Help: "CPU time (user+system, all threads) of the agent process during its first programming of the data plane; 0 until the agent is first ready.",
		}),
		BackendInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_backend_info", Help: "Always 1, labelled with the backend type and its engine (kernel, or userspace for wireguard-go).",
		}, []string{"backend", "engine"}),
		MemoryReleases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_memory_releases_total", Help: "Times the agent collected garbage and returned freed memory to the OS after 1,000 or more lease changes: after the Set of a burst, or 1 s after the last Set of a stream.",
		}),
	}
	m.Registry.MustRegister(m.LeasesKnown, m.PeersProgrammed, m.ReconcileRuns, m.ReconcileErrors,
		m.ReconcileTime, m.WatchRestarts, m.EtcdLatency, m.LeaseChanges, m.InitialProgram, m.InitialProgramCPU,
		m.BackendInfo, m.MemoryReleases,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveEtcd records the latency of one etcd request.
func (m *Metrics) ObserveEtcd(op string, d time.Duration) {
	m.EtcdLatency.WithLabelValues(op).Observe(d.Seconds())
}
