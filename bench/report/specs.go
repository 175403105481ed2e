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

// Packages maps the File of a row spec (run.sh's go-<file>.txt) to the
// package, relative to the repository's root, whose benchmarks write it.
var Packages = map[string]string{
	"weftd": "cmd/weftd",
	"cni":   "cniplugin",
	"vxlan": "backend/vxlan",
	"etcd":  "subnet/etcd",
}

// Specs are the rows taken from the `go test -bench` files that run.sh
// writes as out/go-<file>.txt.
var Specs = []BenchRow{
	// cmd/weftd: the whole agent as a process.
	// Start-up (exec → /readyz 200) has no floor measured beside it; its
	// programming part does: ip -batch of the same entries.
	{Section: SecScale, What: "agent start (exec) to ready, 5 peers (target 100 ms)", File: "weftd", Name: "BenchmarkColdStart/peers=5", Unit: "ms-to-ready", Show: "ms"},
	{Section: SecScale, What: "agent start (exec) to ready, 1,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "ms-to-ready", Show: "ms"},
	{Section: SecScale, What: "agent start (exec) to ready, 5,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=5000", Unit: "ms-to-ready", Show: "ms"},
	{Section: SecScale, What: "agent CPU from start (exec) to ready, 1,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "cpu-s", Scale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "agent CPU from start (exec) to ready, 5,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=5000", Unit: "cpu-s", Scale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "agent at start programs 1,000 peers: first Set until the kernel holds every entry", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "program-ms", BaseName: "BenchmarkIPBatch/peers=1000", BaseUnit: "ns/op", Show: "ms", BaseScale: 1e-6},
	{Section: SecScale, What: "agent at start programs 5,000 peers: first Set until the kernel holds every entry", File: "weftd", Name: "BenchmarkColdStart/peers=5000", Unit: "program-ms", BaseName: "BenchmarkIPBatch/peers=5000", BaseUnit: "ns/op", Show: "ms", BaseScale: 1e-6},
	{Section: SecScale, What: "agent CPU to program 1,000 peers at start (first Set)", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "program-cpu-s", BaseName: "BenchmarkIPBatch/peers=1000", BaseUnit: "cpu-s", Scale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "agent CPU to program 5,000 peers at start (first Set)", File: "weftd", Name: "BenchmarkColdStart/peers=5000", Unit: "program-cpu-s", BaseName: "BenchmarkIPBatch/peers=5000", BaseUnit: "cpu-s", Scale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "agent resident memory, 1,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=1000", Unit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "agent resident memory, 5,000 peers", File: "weftd", Name: "BenchmarkColdStart/peers=5000", Unit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "agent at start programs 20,000 peers: first Set until the kernel holds every entry", File: "weftd", Name: "BenchmarkColdStart/peers=20000", Unit: "program-ms", BaseName: "BenchmarkIPBatch/peers=20000", BaseUnit: "ns/op", Show: "ms", BaseScale: 1e-6},
	{Section: SecScale, What: "agent CPU to program 20,000 peers at start (first Set)", File: "weftd", Name: "BenchmarkColdStart/peers=20000", Unit: "program-cpu-s", BaseName: "BenchmarkIPBatch/peers=20000", BaseUnit: "cpu-s", Scale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "agent resident memory, 20,000 peers (target 50 MB)", File: "weftd", Name: "BenchmarkColdStart/peers=20000", Unit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "agent idle CPU, 5,000 peers", File: "weftd", Name: "BenchmarkOneChange5000", Unit: "idle-cpu-%", Show: "% of a CPU",
		Notes: []Note{{Unit: "idle-window-s", Format: "over %s s"}, {Unit: "cpu-clock-res-ns", Format: "process CPU clock, resolution %s ns"}}},
	{Section: SecScale, What: "agent resident memory idle, 5,000 peers", File: "weftd", Name: "BenchmarkOneChange5000", Unit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "one lease added with 5,000 present: etcd put to route in kernel", File: "weftd", Name: "BenchmarkOneChange5000", Unit: "ms-add-to-kernel", Show: "ms"},
	{Section: SecScale, What: "one lease removed with 5,000 present: etcd delete to route gone", File: "weftd", Name: "BenchmarkOneChange5000", Unit: "ms-del-to-kernel", Show: "ms"},
	{Section: SecScale, What: "4,000 leases at once onto an agent with 1,000: last route in kernel", File: "weftd", Name: "BenchmarkBurst4000", Unit: "ms-to-kernel", Show: "ms"},
	{Section: SecScale, What: "4,000 leases at once onto an agent with 1,000: agent CPU", File: "weftd", Name: "BenchmarkBurst4000", Unit: "cpu-s", Show: "CPU-s"},
	{Section: SecScale, What: "4,000 leases one by one (a writer process, one transaction each) onto an agent with 1,000: agent CPU (target 0.8)", File: "weftd", Name: "BenchmarkStream4000", Unit: "cpu-s", Show: "CPU-s", BaseName: "BenchmarkBurst4000", BaseUnit: "cpu-s", BaseLabel: "the same 4,000 at once (Burst4000)",
		Notes: []Note{{Unit: "writer-s", Format: "written over %s s"}, {Unit: "sets", Format: "%s backend Sets"}}},
	{Section: SecScale, What: "4,000 leases one by one onto an agent with 1,000: last write to last route in kernel (target 100 ms)", File: "weftd", Name: "BenchmarkStream4000", Unit: "ms-after-last-write", Show: "ms"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 1,000: agent CPU per lease", File: "weftd", Name: "BenchmarkStreamPerLease/peers=1000", Unit: "cpu-ms-per-lease", Show: "CPU-ms", BaseName: "BenchmarkStreamPerLease/peers=1000", BaseUnit: "floor-cpu-ms-per-lease", BaseLabel: "kernel floor: ip -batch adding the same 1,000 peers' entries onto 1,000, same run"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 1,000: the agent's own CPU per lease (agent minus the kernel floor; flat from 1,000 to 20,000 is linear)", File: "weftd", Name: "BenchmarkStreamPerLease/peers=1000", Unit: "own-cpu-ms-per-lease", Show: "CPU-ms"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 5,000: agent CPU per lease", File: "weftd", Name: "BenchmarkStreamPerLease/peers=5000", Unit: "cpu-ms-per-lease", Show: "CPU-ms", BaseName: "BenchmarkStreamPerLease/peers=5000", BaseUnit: "floor-cpu-ms-per-lease", BaseLabel: "kernel floor: ip -batch adding the same 1,000 peers' entries onto 5,000, same run"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 5,000: the agent's own CPU per lease (agent minus the kernel floor; flat from 1,000 to 20,000 is linear)", File: "weftd", Name: "BenchmarkStreamPerLease/peers=5000", Unit: "own-cpu-ms-per-lease", Show: "CPU-ms"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 20,000: agent CPU per lease", File: "weftd", Name: "BenchmarkStreamPerLease/peers=20000", Unit: "cpu-ms-per-lease", Show: "CPU-ms", BaseName: "BenchmarkStreamPerLease/peers=20000", BaseUnit: "floor-cpu-ms-per-lease", BaseLabel: "kernel floor: ip -batch adding the same 1,000 peers' entries onto 20,000, same run"},
	{Section: SecScale, What: "1,000 leases one by one onto an agent with 20,000: the agent's own CPU per lease (agent minus the kernel floor; flat from 1,000 to 20,000 is linear)", File: "weftd", Name: "BenchmarkStreamPerLease/peers=20000", Unit: "own-cpu-ms-per-lease", Show: "CPU-ms"},
	{Section: SecScale, What: "agent resident memory 100 ms after the last of 1,000 leases streamed onto 20,000", File: "weftd", Name: "BenchmarkStreamPerLease/peers=20000", Unit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "agent resident memory after 1,000 leases streamed onto 20,000, settled (1.5 s after the last route, past the agent's 1 s quiet time; target 50 MB)", File: "weftd", Name: "BenchmarkStreamPerLease/peers=20000", Unit: "rss-settled-MB", Show: "MB"},
	// Kubernetes mode: the peers are kubelet-sized Node objects in a real
	// apiserver; the etcd mode's figure of the same run is the baseline
	// (target: within 1.5x; RSS under 60 MB with 5,000 Nodes).
	{Section: SecScale, What: "Kubernetes mode: agent start (exec) to ready, 1,000 Nodes", File: "weftd", Name: "BenchmarkKubeColdStart/nodes=1000", Unit: "ms-to-ready", BaseName: "BenchmarkColdStart/peers=1000", BaseUnit: "ms-to-ready", Show: "ms"},
	{Section: SecScale, What: "Kubernetes mode: agent start (exec) to ready, 5,000 Nodes", File: "weftd", Name: "BenchmarkKubeColdStart/nodes=5000", Unit: "ms-to-ready", BaseName: "BenchmarkColdStart/peers=5000", BaseUnit: "ms-to-ready", Show: "ms"},
	{Section: SecScale, What: "Kubernetes mode: agent CPU from start to ready, 5,000 Nodes", File: "weftd", Name: "BenchmarkKubeColdStart/nodes=5000", Unit: "cpu-s", BaseName: "BenchmarkColdStart/peers=5000", BaseUnit: "cpu-s", Scale: 1000, BaseScale: 1000, Show: "CPU-ms"},
	{Section: SecScale, What: "Kubernetes mode: agent resident memory, 5,000 Nodes (target 60 MB)", File: "weftd", Name: "BenchmarkKubeColdStart/nodes=5000", Unit: "rss-MB", BaseName: "BenchmarkColdStart/peers=5000", BaseUnit: "rss-MB", Show: "MB"},
	{Section: SecScale, What: "Kubernetes mode: one Node added with 5,000 present: create to route in kernel", File: "weftd", Name: "BenchmarkKubeOneChange5000", Unit: "ms-add-to-kernel", BaseName: "BenchmarkOneChange5000", BaseUnit: "ms-add-to-kernel", Show: "ms",
		Notes: []Note{{Unit: "ms-create-call", Format: "of which the apiserver's create call took %s ms"}}},
	{Section: SecScale, What: "Kubernetes mode: one Node deleted with 5,000 present: delete to route gone", File: "weftd", Name: "BenchmarkKubeOneChange5000", Unit: "ms-del-to-kernel", BaseName: "BenchmarkOneChange5000", BaseUnit: "ms-del-to-kernel", Show: "ms"},

	// cniplugin: ADD/DEL through libcni; bare bridge+host-local is the baseline.
	{Section: SecCNI, What: "ADD median, flannel (go bench, sequential)", File: "cni", Name: "BenchmarkAddDel", Unit: "flannel-add-median-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-add-median-ms", Show: "ms"},
	{Section: SecCNI, What: "ADD p95, flannel (go bench, sequential)", File: "cni", Name: "BenchmarkAddDel", Unit: "flannel-add-p95-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-add-p95-ms", Show: "ms"},
	{Section: SecCNI, What: "ADD median, stock conflist flannel+portmap (go bench)", File: "cni", Name: "BenchmarkAddDel", Unit: "stock-add-median-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-add-median-ms", Show: "ms"},
	{Section: SecCNI, What: "DEL median, flannel (go bench, sequential)", File: "cni", Name: "BenchmarkAddDel", Unit: "flannel-del-median-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-del-median-ms", Show: "ms"},
	{Section: SecCNI, What: "DEL p95, flannel (go bench, sequential)", File: "cni", Name: "BenchmarkAddDel", Unit: "flannel-del-p95-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-del-p95-ms", Show: "ms"},
	{Section: SecCNI, What: "DEL median, stock conflist flannel+portmap (go bench)", File: "cni", Name: "BenchmarkAddDel", Unit: "stock-del-median-ms", BaseName: "BenchmarkAddDel", BaseUnit: "bare-del-median-ms", Show: "ms"},
	// The floor under the meta-plugin's overhead: one more process.
	{Section: SecCNI, What: "one process start: flannel answering VERSION, beside the reference loopback plugin (the stand-in for flannel's own plugin, which is not built here; target ≤ 1×)", File: "cni", Name: "BenchmarkExecFloor", Unit: "flannel-version-ms", BaseName: "BenchmarkExecFloor", BaseUnit: "loopback-version-ms", Show: "ms"},
	{Section: SecCNI, What: "one process start: /bin/true (this machine's floor)", File: "cni", Name: "BenchmarkExecFloor", Unit: "true-ms", Show: "ms"},

	// backend/vxlan: programming peers into a namespace vs ip -batch.
	{Section: SecComponents, What: "vxlan backend programs 1,000 peers (wall)", File: "vxlan", Name: "BenchmarkProgram1000", Unit: "ns/op", BaseName: "BenchmarkIPBatch1000", BaseUnit: "ns/op", Scale: 1e-6, Show: "ms"},
	{Section: SecComponents, What: "vxlan backend programs 5,000 peers (wall)", File: "vxlan", Name: "BenchmarkProgram5000", Unit: "ns/op", BaseName: "BenchmarkIPBatch5000", BaseUnit: "ns/op", Scale: 1e-6, Show: "ms"},
	{Section: SecComponents, What: "vxlan backend programs 1,000 peers (CPU)", File: "vxlan", Name: "BenchmarkProgram1000", Unit: "cpu-s/op", BaseName: "BenchmarkIPBatch1000", BaseUnit: "cpu-s/op", Scale: 1000, Show: "CPU-ms"},
	{Section: SecComponents, What: "vxlan backend programs 5,000 peers (CPU)", File: "vxlan", Name: "BenchmarkProgram5000", Unit: "cpu-s/op", BaseName: "BenchmarkIPBatch5000", BaseUnit: "cpu-s/op", Scale: 1000, Show: "CPU-ms"},
	{Section: SecComponents, What: "vxlan backend: one change with 5,000 peers", File: "vxlan", Name: "BenchmarkOneChange5000", Unit: "ns/op", Scale: 1e-6, Show: "ms"},

	// subnet/etcd: leasing vs the same etcd RPCs made raw (Get prefix, Grant,
	// Txn), taking turns in the same iterations.
	{Section: SecComponents, What: "acquire a lease among 1,000 (new node)", File: "etcd", Name: "BenchmarkAcquire/leases=1000", Unit: "acquire-ms", BaseName: "BenchmarkAcquire/leases=1000", BaseUnit: "raw-rpcs-ms", Show: "ms", BaseLabel: "the same RPCs raw: Get of the prefix, Grant, Txn"},
	{Section: SecComponents, What: "acquire a lease among 10,000 (new node)", File: "etcd", Name: "BenchmarkAcquire/leases=10000", Unit: "acquire-ms", BaseName: "BenchmarkAcquire/leases=10000", BaseUnit: "raw-rpcs-ms", Show: "ms", BaseLabel: "the same RPCs raw: Get of the prefix, Grant, Txn"},
	{Section: SecComponents, What: "watch delivers 1,000 changes: after the last write", File: "etcd", Name: "BenchmarkWatchDeliver1000", Unit: "ms-after-last-write", BaseName: "BenchmarkRawWatch1000", BaseUnit: "ms-after-last-write", Show: "ms"},
}
