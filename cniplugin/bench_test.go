package cniplugin_test

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weftnet/weft/test/cnitest"
	"github.com/weftnet/weft/test/netnstest"
)

// BenchmarkAddDel measures ADD and DEL through libcni for three configs,
// each in a host namespace of its own: the bare bridge + host-local config
// that flannel generates (the baseline; cnitest.DelegateConfList derives it
// with the plugin's own code from the same net conf and subnet.env), flannel
// alone, and the stock
// conflist (flannel + portmap). The configs take turns within every
// iteration, so that a change in the machine's load hits all three alike.
// flannel minus bare is the meta-plugin's own overhead; stock minus flannel
// is portmap's. For each config and verb it reports the median and p95
// latency and the median CPU time of all plugin processes, in milliseconds.
//
//	go test -run '^$' -bench AddDel -benchtime 100x ./cniplugin/
func BenchmarkAddDel(b *testing.B) {
	env := cnitest.DefaultEnv()
	type config struct {
		name       string
		h          *cnitest.Host
		list       *libcni.NetworkConfigList
		pod        *cnitest.Pod
		add, del   []time.Duration
		addC, delC []time.Duration
	}
	var configs []*config
	for _, name := range []string{"bare", "flannel", "stock"} {
		h := cnitest.NewHost(b, binDir, env)
		c := &config{name: name, h: h, pod: h.NewPod(b)}
		switch name {
		case "bare":
			// What flannel generates on this host (its subnet.env, its
			// host-local store), run without flannel.
			c.list = h.DelegateConfList(b, h.FlannelConfList(b, "1.0.0"))
		case "flannel":
			c.list = h.FlannelConfList(b, "1.0.0")
		case "stock":
			c.list = h.StockConfList(b, "1.0.0")
		}
		// One untimed cycle creates cni0 and warms the caches.
		c.pod.ContainerID = "warm-" + netnstest.Suffix(8)
		if err := h.Add(c.list, c.pod); err != nil {
			b.Fatal(err)
		}
		if err := h.Del(c.list, c.pod); err != nil {
			b.Fatal(err)
		}
		configs = append(configs, c)
	}
	timed := func(f func() error) (wall, cpu time.Duration) {
		c0, t0 := childCPU(), time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), childCPU() - c0
	}
	for i := 0; b.Loop(); i++ {
		for _, c := range configs {
			c.pod.ContainerID = fmt.Sprintf("bench-%s-%d", netnstest.Suffix(6), i)
			w, cpu := timed(func() error { return c.h.Add(c.list, c.pod) })
			c.add, c.addC = append(c.add, w), append(c.addC, cpu)
			w, cpu = timed(func() error { return c.h.Del(c.list, c.pod) })
			c.del, c.delC = append(c.del, w), append(c.delC, cpu)
		}
	}
	for _, c := range configs {
		b.ReportMetric(ms(quantile(c.add, 0.5)), c.name+"-add-median-ms")
		b.ReportMetric(ms(quantile(c.add, 0.95)), c.name+"-add-p95-ms")
		b.ReportMetric(ms(quantile(c.addC, 0.5)), c.name+"-add-cpu-ms")
		b.ReportMetric(ms(quantile(c.del, 0.5)), c.name+"-del-median-ms")
		b.ReportMetric(ms(quantile(c.del, 0.95)), c.name+"-del-p95-ms")
		b.ReportMetric(ms(quantile(c.delC, 0.5)), c.name+"-del-cpu-ms")
	}
}

// childCPU is the user+system time of all waited-for child processes (the
// plugins and the delegates they ran).
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkExecFloor measures what one more plugin process costs on this
// machine, the floor under the meta-plugin's overhead (it is one process
// between the runtime and bridge): /bin/true, the reference loopback plugin
// answering VERSION (a Go CNI plugin doing nothing), and flannel answering
// VERSION, taking turns in every iteration. Median wall time of each, in
// milliseconds. loopback stands in for flannel's own plugin (which is not
// built here): flannel must start no slower than it.
//
//	go test -run '^$' -bench ExecFloor -benchtime 100x ./cniplugin/
func BenchmarkExecFloor(b *testing.B) {
	cmds := []struct {
		metric string
		argv   []string
		env    []string
	}{
		{"true-ms", []string{"/bin/true"}, nil},
		{"loopback-version-ms", []string{binDir + "/loopback"}, []string{"CNI_COMMAND=VERSION"}},
		{"flannel-version-ms", []string{binDir + "/flannel"}, []string{"CNI_COMMAND=VERSION"}},
	}
	times := make([][]time.Duration, len(cmds))
	for b.Loop() {
		for i, c := range cmds {
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Env = c.env
			cmd.Stdin = strings.NewReader("{}")
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %v: %s", c.argv, err, out)
			}
			times[i] = append(times[i], time.Since(t0))
		}
	}
	for i, c := range cmds {
		b.ReportMetric(ms(quantile(times[i], 0.5)), c.metric)
	}
}
