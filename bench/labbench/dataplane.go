package labbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/ops/lab"
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
// the underlay as the baseline, alternating, reps times each for secs
// seconds. With six, the lab is dual-stack and both run over IPv6.
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
	over := report.Measurement{What: backend + ": TCP pod to pod across two hosts (overlay)", Unit: "Gbit/s", Stat: "median"}
	under := report.Measurement{What: "host to host on the underlay", Unit: "Gbit/s", Stat: "median"}
	hostTo, podTo := h2.Addr, p2.Addr.Addr()
	if six {
		over.What = backend + ": TCP pod to pod across two hosts over IPv6 (overlay)"
		under.What = "host to host on the IPv6 underlay"
		hostTo, podTo = h2.Addr6, p2.Addr6.Addr()
	}
	for i := range reps {
		for _, c := range []struct {
			m        *report.Measurement
			from     string
			to       netip.Addr
			fromName string
		}{{&under, h1.NS, hostTo, h1.Name}, {&over, p1.NS, podTo, p1.Name}} {
			argv := nsArgv(c.from, "iperf3", "-c", c.to.String(), "-t", strconv.Itoa(secs), "-J")
			gbps, err := iperf(ctx, argv)
			if err != nil {
				return nil, err
			}
			b.say("%s run %d: %s -> %s: %.2f Gbit/s", backend, i+1, c.fromName, c.to, gbps)
			c.m.Samples = append(c.m.Samples, gbps)
			c.m.Command = upCmd + "; " + b.show(argv...)
		}
	}
	over.Baseline = &under
	out := []report.Measurement{over}
	if backend == "wireguard" {
		floor, err := b.wireguardFloor(ctx, st, secs, reps, upCmd)
		if err != nil {
			return nil, err
		}
		floor.Baseline = &under
		over.Note = "target: at least 0.3 of the underlay, or the wireguard-go floor's ratio (next row) if lower"
		out = []report.Measurement{over, floor}
	}
	return out, nil
}

// wireguardFloor measures what wireguard-go itself carries between the two
// hosts, with no pods, bridge or veth: host 1 to host 2's own address on
// flannel-wg (<subnet>.0), through both userspace engines.
func (b *Bench) wireguardFloor(ctx context.Context, st *lab.State, secs, reps int, upCmd string) (report.Measurement, error) {
	h1, h2 := st.Hosts[0], st.Hosts[1]
	env, err := subnetenv.Read(h2.SubnetFile)
	if err != nil {
		return report.Measurement{}, err
	}
	dst := env.Subnet.Masked().Addr() // the address flannel-wg carries
	floor := report.Measurement{What: "wireguard-go floor: TCP host to host through both hosts' flannel-wg (no pods)", Unit: "Gbit/s", Stat: "median"}
	for i := range reps {
		argv := nsArgv(h1.NS, "iperf3", "-c", dst.String(), "-t", strconv.Itoa(secs), "-J")
		gbps, err := iperf(ctx, argv)
		if err != nil {
			return floor, err
		}
		b.say("wireguard floor run %d: %s -> %s: %.2f Gbit/s", i+1, h1.Name, dst, gbps)
		floor.Samples = append(floor.Samples, gbps)
		floor.Command = upCmd + "; " + b.show(argv...)
	}
	return floor, nil
}

// iperf runs an iperf3 client, retrying for a while when it fails (the
// server may not listen yet), and returns the received throughput in Gbit/s.
func iperf(ctx context.Context, argv []string) (float64, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := run(ctx, argv...)
		gbps, perr := parseIperf([]byte(out))
		if err == nil && perr == nil {
			return gbps, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, errors.Join(err, perr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseIperf returns end.sum_received.bits_per_second of iperf3's JSON
// output in Gbit/s.
func parseIperf(out []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parsing iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 reported no received throughput")
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}
