package labbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/subnet/subnetenv"
)

// LabUp times `weft lab up --hosts 3 --pods 2` (which returns once its
// ping matrix is green, and fails otherwise) reps times, taking the lab
// down between runs.
func (b *Bench) LabUp(ctx context.Context, reps int) ([]report.Measurement, error) {
	m := report.Measurement{What: "`weft lab up`, 3 hosts × 2 pods, until ready with a green ping matrix", Unit: "ms", Stat: "median", Target: 5000}
	for range reps {
		_, cmd, took, err := b.Up(ctx, 3, 2, "vxlan")
		if err != nil {
			return nil, err
		}
		b.Down()
		b.say("lab up took %s", took.Round(time.Millisecond))
		m.Samples = append(m.Samples, ms(took))
		m.Command = cmd
	}
	return []report.Measurement{m}, nil
}

// DataPlane measures TCP throughput with iperf3 between two hosts of a lab
// of the given backend: pod to pod over the overlay, and host to host on
// the underlay as the baseline, alternating (every other round in reverse
// order), reps times each for secs seconds. With six, the lab is dual-stack and both run over IPv6. For
// the tunnelling backends over IPv4 it also measures host to host through
// the tunnel device (host 1 to host 2's own address on flannel.<VNI> or
// flannel-wg, <subnet>.0): encapsulation without the pods' veth, bridge
// and forwarding, which splits the overlay's cost into the tunnel's and
// the pod attachment's (for wireguard, the wireguard-go floor). For
// vxlan over IPv4 it also measures both paths made by hand with `ip`
// between the same two hosts, no agent involved (floor.go), each beside
// Weft's, and rows giving Weft's figure against that floor; for host-gw
// over IPv4 the hand-made pod path, routed over the underlay.
//
// Beside each throughput it reports the CPU the transfer cost per GB
// (iperf3's own client and server processes, which on veth links also run
// the softirq work of the whole path): on a shared machine the throughput
// follows whatever CPU is left over, while the cost per GB moves far less,
// so the cost ratio is the steadier comparison of two paths.
func (b *Bench) DataPlane(ctx context.Context, backend string, secs, reps int, six bool) ([]report.Measurement, error) {
	var extra []string
	if six {
		extra = []string{"--dual-stack"}
	}
	st, upCmd, _, err := b.Up(ctx, 2, 1, backend, extra...)
	if err != nil {
		return nil, err
	}
	defer b.Down()
	h1, h2 := st.Hosts[0], st.Hosts[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	for _, ns := range []string{p2.NS, h2.NS} {
		srv, err := start(nsArgv(ns, "iperf3", "-s"), io.Discard)
		if err != nil {
			return nil, err
		}
		defer stop(srv)
	}
	newLeg := func(what, from string, to netip.Addr, fromName string) *leg {
		return &leg{
			gbps: report.Measurement{What: what, Unit: "Gbit/s", Stat: "median"},
			cost: report.Measurement{What: what + ": CPU per GB moved", Unit: "CPU-ms/GB", Stat: "median"},
			from: from, to: to, fromName: fromName,
		}
	}
	var under, over *leg
	legs := []*leg{}
	if six {
		under = newLeg("host to host on the IPv6 underlay", h1.NS, h2.Addr6, h1.Name)
		over = newLeg(backend+": TCP pod to pod across two hosts over IPv6 (overlay)", p1.NS, p2.Addr6.Addr(), p1.Name)
		legs = append(legs, under, over)
	} else {
		under = newLeg("host to host on the underlay", h1.NS, h2.Addr, h1.Name)
		over = newLeg(backend+": TCP pod to pod across two hosts (overlay)", p1.NS, p2.Addr.Addr(), p1.Name)
		legs = append(legs, under)
		device := map[string]string{
			"vxlan":     "vxlan: TCP host to host through the VXLAN device (no pods)",
			"wireguard": "wireguard-go floor: TCP host to host through both hosts' flannel-wg (no pods)",
		}[backend]
		if device != "" {
			env, err := subnetenv.Read(h2.SubnetFile)
			if err != nil {
				return nil, err
			}
			// The device carries <subnet>.0 (backend/vxlan, backend/wireguard).
			legs = append(legs, newLeg(device, h1.NS, env.Subnet.Masked().Addr(), h1.Name))
		}
		legs = append(legs, over)
	}
	// The floor under the overlay rows of vxlan and host-gw: the same paths
	// made by hand between the same two hosts, no agent involved
	// (floor.go), with an iperf3 server in the hand-made pod.
	var rawDev, rawPod *leg
	if (backend == "vxlan" || backend == "host-gw") && !six {
		hostgw := backend == "host-gw"
		fl, err := b.buildFloor(ctx, h1, h2, hostgw)
		if err != nil {
			return nil, err
		}
		defer b.dropFloor(h1, h2)
		srv, err := start(nsArgv(fl.serverNS, "iperf3", "-s"), io.Discard)
		if err != nil {
			return nil, err
		}
		defer stop(srv)
		if hostgw {
			rawPod = newLeg("floor: TCP pod to pod through a bridge and veth made by hand, routed over the underlay (no agent)", fl.podNS, fl.pod, h1.Name+"-pod0")
			rawPod.setup = floorHostGWCommand(h1, h2) + "; "
			legs = append(legs, rawPod)
		} else {
			rawDev = newLeg("floor: TCP host to host through a VXLAN device made by hand (no agent)", h1.NS, fl.dev, h1.Name)
			rawPod = newLeg("floor: TCP pod to pod through a VXLAN device, bridge and veth made by hand (no agent)", fl.podNS, fl.pod, h1.Name+"-pod0")
			rawDev.setup = floorCommand(h1) + "; "
			rawPod.setup = rawDev.setup
			// Each after the Weft row it is the floor of.
			legs = []*leg{legs[0], legs[1], rawDev, legs[2], rawPod}
		}
	}
	if backend == "wireguard" {
		over.gbps.Note = "target: at least 0.3 of the underlay, or the wireguard-go floor's ratio (previous row) if lower"
	}
	for i := range reps {
		// Every other round runs the legs in reverse, so that a load that
		// rises or falls through a round does not always favour the same
		// leg.
		round := slices.Clone(legs)
		if i%2 == 1 {
			slices.Reverse(round)
		}
		for _, c := range round {
			argv := nsArgv(c.from, "iperf3", "-c", c.to.String(), "-t", strconv.Itoa(secs), "-J")
			r, err := iperf(ctx, argv)
			if err != nil {
				return nil, err
			}
			b.say("%s run %d: %s -> %s: %.2f Gbit/s, %.0f CPU-ms/GB", backend, i+1, c.fromName, c.to, r.gbps, r.cpuMsPerGB)
			c.gbps.Samples = append(c.gbps.Samples, r.gbps)
			c.cost.Samples = append(c.cost.Samples, r.cpuMsPerGB)
			c.gbps.Command = upCmd + "; " + c.setup + b.show(argv...)
			c.cost.Command = c.gbps.Command
		}
	}
	var out []report.Measurement
	for _, c := range legs[1:] {
		c.gbps.Baseline, c.cost.Baseline = &under.gbps, &under.cost
		c.gbps.Note = joinNotes(spread(c.gbps.Samples), c.gbps.Note)
		out = append(out, c.gbps)
		// wireguard's userspace engine encrypts in a process of its own,
		// whose CPU iperf3 does not see: its cost per GB would look
		// cheaper than the underlay's.
		if backend != "wireguard" {
			c.cost.Note = spread(c.cost.Samples)
			out = append(out, c.cost)
		}
	}
	if rawPod != nil && rawDev == nil {
		out = append(out,
			againstFloor(backend+": Weft's TCP pod to pod, against the hand-made pod path", over.gbps, rawPod.gbps),
			againstFloor(backend+": Weft's pod to pod, CPU per GB, against the hand-made pod path's", over.cost, rawPod.cost))
	}
	if rawDev != nil {
		dev, pod := legs[1], over
		out = append(out,
			againstFloor("vxlan: Weft's TCP host to host through flannel.1, against the hand-made device", dev.gbps, rawDev.gbps),
			againstFloor("vxlan: Weft's host to host through flannel.1, CPU per GB, against the hand-made device's", dev.cost, rawDev.cost),
			againstFloor("vxlan: Weft's TCP pod to pod, against the hand-made pod path", pod.gbps, rawPod.gbps),
			againstFloor("vxlan: Weft's pod to pod, CPU per GB, against the hand-made pod path's", pod.cost, rawPod.cost))
	}
	return out, nil
}

// againstFloor is a row comparing a Weft leg with its hand-made floor: the
// ratio of the two medians, and in the note the ratio of each round's
// pair, which ran seconds apart and so shared the machine's load.
func againstFloor(what string, weft, floor report.Measurement) report.Measurement {
	m := weft
	m.What = what
	m.Baseline = &floor
	var pairs []string
	for i := range min(len(weft.Samples), len(floor.Samples)) {
		pairs = append(pairs, fmt.Sprintf("%.2f", weft.Samples[i]/floor.Samples[i]))
	}
	m.Note = joinNotes(spread(m.Samples), "ratio by round "+strings.Join(pairs, ", "))
	return m
}

// spread names the range of samples, for a median shown without it.
func spread(samples []float64) string {
	if len(samples) < 2 {
		return ""
	}
	return "range " + report.Number(slices.Min(samples)) + "–" + report.Number(slices.Max(samples))
}

// joinNotes joins the non-empty notes with "; ".
func joinNotes(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, "; ")
}

// leg is one path DataPlane measures: its throughput and its CPU cost.
type leg struct {
	gbps, cost report.Measurement
	from       string
	to         netip.Addr
	fromName   string
	// setup is shown in the command before the client's, for a path
	// made outside `weft lab up`.
	setup string
}

// iperfResult is one iperf3 client run.
type iperfResult struct {
	// gbps is the received throughput.
	gbps float64
	// cpuMsPerGB is the CPU time of the client and the server processes
	// (as iperf3 reports it: user + system, percent of the run's wall
	// time) per GB received, in milliseconds.
	cpuMsPerGB float64
}

// iperf runs an iperf3 client, retrying for a while when it fails (the
// server may not listen yet).
func iperf(ctx context.Context, argv []string) (iperfResult, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := run(ctx, argv...)
		r, perr := parseIperf([]byte(out))
		if err == nil && perr == nil {
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return iperfResult{}, errors.Join(err, perr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseIperf reads iperf3's JSON output: end.sum_received (throughput and
// bytes) and end.cpu_utilization_percent (client and server).
func parseIperf(out []byte) (iperfResult, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Bytes         float64 `json:"bytes"`
				Seconds       float64 `json:"seconds"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return iperfResult{}, fmt.Errorf("parsing iperf3 output: %w", err)
	}
	if r.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	sum := r.End.SumReceived
	if sum.BitsPerSecond == 0 || sum.Bytes == 0 {
		return iperfResult{}, fmt.Errorf("iperf3 reported no received throughput")
	}
	cpuSecs := (r.End.CPU.HostTotal + r.End.CPU.RemoteTotal) / 100 * sum.Seconds
	return iperfResult{gbps: sum.BitsPerSecond / 1e9, cpuMsPerGB: cpuSecs * 1000 / (sum.Bytes / 1e9)}, nil
}
