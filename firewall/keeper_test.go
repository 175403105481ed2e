package firewall_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/test/firewalltest"
)

func policy(subnet string) firewall.Policy {
	return firewall.Policy{Masq: true, Forward: true, IPv4: firewall.Net{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix(subnet),
	}}
}

// syncBuffer is a log sink safe for the loop's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// runKeeper starts k.Run and stops it when the test ends.
func runKeeper(t *testing.T, k *firewall.Keeper) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeeperNothingBeforeSet(t *testing.T) {
	fw := &firewalltest.Fake{}
	k := firewall.NewKeeper(fw, firewall.KeeperOptions{Period: time.Hour})
	if err := k.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := fw.Counts(); e != 0 {
		t.Fatalf("Ensure reached the firewall %d times before any Set", e)
	}
}

func TestKeeperRestoresWithinPeriod(t *testing.T) {
	fw := &firewalltest.Fake{}
	k := firewall.NewKeeper(fw, firewall.KeeperOptions{Period: 20 * time.Millisecond})
	if err := k.Set(policy("10.244.3.1/24")); err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	waitFor(t, "applied", func() bool { _, ok := fw.Installed(); return ok })
	fw.Tamper()
	waitFor(t, "restored", func() bool { _, ok := fw.Installed(); return ok })
	// In place, later passes check without writing.
	_, w0, _ := fw.Counts()
	e0, _, _ := fw.Counts()
	waitFor(t, "three more passes", func() bool { e, _, _ := fw.Counts(); return e >= e0+3 })
	if _, w, _ := fw.Counts(); w != w0 {
		t.Errorf("passes over rules in place wrote %d times", w-w0)
	}
}

func TestKeeperSetAppliesAtOnce(t *testing.T) {
	fw := &firewalltest.Fake{}
	// An hour's period: only Set can make the loop run again.
	k := firewall.NewKeeper(fw, firewall.KeeperOptions{Period: time.Hour})
	if err := k.Set(policy("10.244.3.1/24")); err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	waitFor(t, "first policy", func() bool { p, ok := fw.Installed(); return ok && p == policy("10.244.3.1/24") })
	if err := k.Set(policy("10.244.9.1/24")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second policy", func() bool { p, ok := fw.Installed(); return ok && p == policy("10.244.9.1/24") })

	bad := policy("10.245.9.1/24") // outside the network
	if err := k.Set(bad); err == nil {
		t.Fatal("Set accepted a subnet outside the network")
	}
	if err := k.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p, _ := fw.Installed(); p != policy("10.244.9.1/24") {
		t.Errorf("after a refused Set the firewall holds %+v", p)
	}
}

func TestKeeperLogsErrorsOnce(t *testing.T) {
	fw := &firewalltest.Fake{}
	fw.SetError(errors.New("iptables: resource busy"))
	var logs syncBuffer
	k := firewall.NewKeeper(fw, firewall.KeeperOptions{Period: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := k.Set(policy("10.244.3.1/24")); err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	waitFor(t, "five failing passes", func() bool { e, _, _ := fw.Counts(); return e >= 5 })
	if n := logs.count("keeping the firewall rules"); n != 1 {
		t.Errorf("the same error was logged %d times, want once", n)
	}
	fw.SetError(nil)
	waitFor(t, "recovery", func() bool { _, ok := fw.Installed(); return ok })
	waitFor(t, "recovery logged", func() bool { return logs.count("firewall rules in place again") == 1 })
	e0, _, _ := fw.Counts()
	waitFor(t, "three more passes", func() bool { e, _, _ := fw.Counts(); return e >= e0+3 })
	if n := logs.count("firewall rules in place again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
}

func TestKeeperRetiresTheOtherModeAfterItsOwnRules(t *testing.T) {
	kept, old := &firewalltest.Fake{}, &firewalltest.Fake{}
	ctx := context.Background()
	if err := old.Ensure(ctx, policy("10.244.3.1/24")); err != nil { // the previous mode's rules
		t.Fatal(err)
	}
	kept.SetError(errors.New("nft: no such file"))
	k := firewall.NewKeeper(kept, firewall.KeeperOptions{Period: time.Hour, Retire: old})
	if err := k.Set(policy("10.244.3.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := k.Ensure(ctx); err == nil {
		t.Fatal("Ensure succeeded while the kept firewall fails")
	}
	if _, ok := old.Installed(); !ok {
		t.Fatal("the old mode's rules were removed although the new ones are not in place")
	}
	kept.SetError(nil)
	if err := k.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := old.Installed(); ok {
		t.Fatal("the old mode's rules are still there")
	}
	if _, ok := kept.Installed(); !ok {
		t.Fatal("the new mode's rules are not there")
	}
	for range 3 {
		if err := k.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, r := old.Counts(); r != 1 {
		t.Errorf("the old mode was removed %d times, want once", r)
	}

	// A failing removal is retried at the next pass.
	kept2, old2 := &firewalltest.Fake{}, &firewalltest.Fake{}
	old2.SetError(errors.New("iptables: lock held"))
	k2 := firewall.NewKeeper(kept2, firewall.KeeperOptions{Period: time.Hour, Retire: old2})
	if err := k2.Set(policy("10.244.3.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := k2.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "other mode") {
		t.Fatalf("Ensure = %v, want the removal's error", err)
	}
	old2.SetError(nil)
	if err := k2.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, r := old2.Counts(); r != 2 {
		t.Errorf("removal attempts %d, want 2", r)
	}
}
