package labbench

import (
	"testing"
	"time"
)

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		line string
		want time.Time
		ok   bool
	}{
		{"[1732590000.123456] 64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.1 ms", time.Unix(1732590000, 123456000), true},
		{"[1732590000.5] 64 bytes from 10.244.1.2: icmp_seq=1", time.Unix(1732590000, 500000000), true},
		{"[1732590000.123456] From 10.244.1.1 icmp_seq=1 Destination Net Unreachable", time.Time{}, false},
		{"PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.", time.Time{}, false},
	} {
		got, ok := parseReply(tc.line)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseReply(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParsePingSummary(t *testing.T) {
	out := "--- 10.244.1.2 ping statistics ---\n312 packets transmitted, 310 received, 0.641026% packet loss, time 3130ms\n"
	sent, recv, err := parsePingSummary(out)
	if err != nil || sent != 312 || recv != 310 {
		t.Errorf("got %d, %d, %v; want 312, 310", sent, recv, err)
	}
	if _, _, err := parsePingSummary("ping: connect: Network is unreachable"); err == nil {
		t.Error("no error without a summary")
	}
}

func TestParseIperf(t *testing.T) {
	got, err := parseIperf([]byte(`{"end":{"sum_received":{"bits_per_second":12.5e9,"bytes":5e9,"seconds":4},
		"cpu_utilization_percent":{"host_total":30,"remote_total":20}}}`))
	// 0.5 CPU-s per second for 4 s, 5 GB: 400 ms per GB.
	if err != nil || got.gbps != 12.5 || got.cpuMsPerGB != 400 {
		t.Errorf("got %+v, %v; want 12.5 Gbit/s, 400 CPU-ms/GB", got, err)
	}
	if _, err := parseIperf([]byte(`{"error":"unable to connect to server"}`)); err == nil {
		t.Error("no error for an iperf3 error")
	}
	if _, err := parseIperf([]byte(`{"end":{"sum_received":{"bits_per_second":0}}}`)); err == nil {
		t.Error("no error for a run that received nothing")
	}
}
