package report

// Section titles, in the order RESULTS.md shows them.
const (
	SecLabUp       = "Lab up"
	SecDataPlane   = "1. Data plane"
	SecConvergence = "2. Convergence"
	SecCNI         = "3. CNI"
	SecRestart     = "4. Restart"
	SecScale       = "5. Scale"
	SecComponents  = "Components (Go benchmarks)"
)

// Titles lists the sections in order.
var Titles = []string{SecLabUp, SecDataPlane, SecConvergence, SecCNI, SecRestart, SecScale, SecComponents}

// Specs are the rows taken from the `go test -bench` files that run.sh
// writes as out/go-<file>.txt.
var Specs = []BenchRow{
	// cmd/weftd: the whole agent as a process.
	{SecScale, "agent start to ready, 5 peers (target 100 ms)", "weftd", "BenchmarkColdStart/peers=5", "ms-to-ready", "", "", 0, "ms", 0},
	{SecScale, "agent start to ready, 1,000 peers (time to program)", "weftd", "BenchmarkColdStart/peers=1000", "ms-to-ready", "BenchmarkIPBatch/peers=1000", "ns/op", 0, "ms", 1e-6},
	{SecScale, "agent start to ready, 5,000 peers (time to program)", "weftd", "BenchmarkColdStart/peers=5000", "ms-to-ready", "BenchmarkIPBatch/peers=5000", "ns/op", 0, "ms", 1e-6},
	{SecScale, "agent CPU to start with 1,000 peers", "weftd", "BenchmarkColdStart/peers=1000", "cpu-s", "BenchmarkIPBatch/peers=1000", "cpu-s", 0, "CPU-s", 0},
	{SecScale, "agent CPU to start with 5,000 peers", "weftd", "BenchmarkColdStart/peers=5000", "cpu-s", "BenchmarkIPBatch/peers=5000", "cpu-s", 0, "CPU-s", 0},
	{SecScale, "agent resident memory, 1,000 peers", "weftd", "BenchmarkColdStart/peers=1000", "rss-MB", "", "", 0, "MB", 0},
	{SecScale, "agent resident memory, 5,000 peers", "weftd", "BenchmarkColdStart/peers=5000", "rss-MB", "", "", 0, "MB", 0},
	{SecScale, "agent idle CPU, 5,000 peers", "weftd", "BenchmarkOneChange5000", "idle-cpu-%", "", "", 0, "% of a CPU", 0},
	{SecScale, "agent resident memory idle, 5,000 peers", "weftd", "BenchmarkOneChange5000", "rss-MB", "", "", 0, "MB", 0},
	{SecScale, "one lease added with 5,000 present: etcd put to route in kernel", "weftd", "BenchmarkOneChange5000", "ms-add-to-kernel", "", "", 0, "ms", 0},
	{SecScale, "one lease removed with 5,000 present: etcd delete to route gone", "weftd", "BenchmarkOneChange5000", "ms-del-to-kernel", "", "", 0, "ms", 0},
	{SecScale, "4,000 leases at once onto an agent with 1,000: last route in kernel", "weftd", "BenchmarkBurst4000", "ms-to-kernel", "", "", 0, "ms", 0},
	{SecScale, "4,000 leases at once onto an agent with 1,000: agent CPU", "weftd", "BenchmarkBurst4000", "cpu-s", "", "", 0, "CPU-s", 0},

	// cniplugin: ADD/DEL through libcni; bare bridge+host-local is the baseline.
	{SecCNI, "ADD median, flannel (go bench, sequential)", "cni", "BenchmarkAddDel", "flannel-add-median-ms", "BenchmarkAddDel", "bare-add-median-ms", 0, "ms", 0},
	{SecCNI, "ADD p95, flannel (go bench, sequential)", "cni", "BenchmarkAddDel", "flannel-add-p95-ms", "BenchmarkAddDel", "bare-add-p95-ms", 0, "ms", 0},
	{SecCNI, "ADD median, stock conflist flannel+portmap (go bench)", "cni", "BenchmarkAddDel", "stock-add-median-ms", "BenchmarkAddDel", "bare-add-median-ms", 0, "ms", 0},
	{SecCNI, "DEL median, flannel (go bench, sequential)", "cni", "BenchmarkAddDel", "flannel-del-median-ms", "BenchmarkAddDel", "bare-del-median-ms", 0, "ms", 0},
	{SecCNI, "DEL p95, flannel (go bench, sequential)", "cni", "BenchmarkAddDel", "flannel-del-p95-ms", "BenchmarkAddDel", "bare-del-p95-ms", 0, "ms", 0},
	{SecCNI, "DEL median, stock conflist flannel+portmap (go bench)", "cni", "BenchmarkAddDel", "stock-del-median-ms", "BenchmarkAddDel", "bare-del-median-ms", 0, "ms", 0},
	// The floor under the meta-plugin's overhead: one more process.
	{SecCNI, "one process start: flannel answering VERSION", "cni", "BenchmarkExecFloor", "flannel-version-ms", "BenchmarkExecFloor", "loopback-version-ms", 0, "ms", 0},
	{SecCNI, "one process start: /bin/true (this machine's floor)", "cni", "BenchmarkExecFloor", "true-ms", "", "", 0, "ms", 0},

	// backend/vxlan: programming peers into a namespace vs ip -batch.
	{SecComponents, "vxlan backend programs 1,000 peers (wall)", "vxlan", "BenchmarkProgram1000", "ns/op", "BenchmarkIPBatch1000", "ns/op", 1e-6, "ms", 0},
	{SecComponents, "vxlan backend programs 5,000 peers (wall)", "vxlan", "BenchmarkProgram5000", "ns/op", "BenchmarkIPBatch5000", "ns/op", 1e-6, "ms", 0},
	{SecComponents, "vxlan backend programs 1,000 peers (CPU)", "vxlan", "BenchmarkProgram1000", "cpu-s/op", "BenchmarkIPBatch1000", "cpu-s/op", 1000, "CPU-ms", 0},
	{SecComponents, "vxlan backend programs 5,000 peers (CPU)", "vxlan", "BenchmarkProgram5000", "cpu-s/op", "BenchmarkIPBatch5000", "cpu-s/op", 1000, "CPU-ms", 0},
	{SecComponents, "vxlan backend: one change with 5,000 peers", "vxlan", "BenchmarkOneChange5000", "ns/op", "", "", 1e-6, "ms", 0},

	// subnet/etcd: leasing vs the raw etcd calls it makes.
	{SecComponents, "acquire a lease among 1,000", "etcd", "BenchmarkAcquire/leases=1000", "ns/op", "BenchmarkAcquire/RawGetPrefix/leases=1000", "ns/op", 1e-6, "ms", 0},
	{SecComponents, "acquire a lease among 10,000", "etcd", "BenchmarkAcquire/leases=10000", "ns/op", "BenchmarkAcquire/RawGetPrefix/leases=10000", "ns/op", 1e-6, "ms", 0},
	{SecComponents, "raw etcd Txn (a floor for acquire)", "etcd", "BenchmarkRawTxn", "ns/op", "", "", 1e-6, "ms", 0},
	{SecComponents, "watch delivers 1,000 changes: after the last write", "etcd", "BenchmarkWatchDeliver1000", "ms-after-last-write", "BenchmarkRawWatch1000", "ms-after-last-write", 0, "ms", 0},
}
