package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Endpoint is a pod as the ping matrix sees it.
type Endpoint struct {
	Name string // e.g. "host1-pod2"
	NS   string
	Addr netip.Addr
}

// Matrix is the result of pinging every pod from every other pod.
type Matrix struct {
	Pods []Endpoint
	// OK[i][j] reports whether pod i got an answer from pod j (true on the
	// diagonal, which is not pinged).
	OK [][]bool
}

// Green reports whether every ping was answered.
func (m *Matrix) Green() bool {
	for i := range m.OK {
		for j := range m.OK[i] {
			if !m.OK[i][j] {
				return false
			}
		}
	}
	return true
}

// Failures returns the number of unanswered pings.
func (m *Matrix) Failures() int {
	n := 0
	for i := range m.OK {
		for j := range m.OK[i] {
			if !m.OK[i][j] {
				n++
			}
		}
	}
	return n
}

// pinger sends one echo from the namespace ns to addr and reports whether
// it was answered. It is a variable of pingMatrix so tests can fake it.
type pinger func(ctx context.Context, ns string, addr netip.Addr) bool

// pingFromNS pings once, waiting at most a second, from inside ns.
func pingFromNS(ctx context.Context, ns string, addr netip.Addr) bool {
	err := inNS(ns, func() error {
		return exec.CommandContext(ctx, "ping", "-n", "-q", "-c1", "-W1", addr.String()).Run()
	})
	return err == nil
}

// pingMatrix pings every pod from every other pod, all at once. Until the
// deadline it pings the unanswered pairs again, so a lab that is still
// converging turns green as soon as it can; a zero deadline pings once.
func pingMatrix(ctx context.Context, pods []Endpoint, ping pinger, deadline time.Time) *Matrix {
	m := &Matrix{Pods: pods, OK: make([][]bool, len(pods))}
	for i := range pods {
		m.OK[i] = make([]bool, len(pods))
		m.OK[i][i] = true
	}
	for {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range pods {
			for j := range pods {
				if m.OK[i][j] {
					continue
				}
				wg.Go(func() {
					ok := ping(ctx, pods[i].NS, pods[j].Addr)
					mu.Lock()
					m.OK[i][j] = ok
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		if m.Green() || ctx.Err() != nil || !time.Now().Add(100*time.Millisecond).Before(deadline) {
			return m
		}
		select {
		case <-ctx.Done():
			return m
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shortName abbreviates "host1-pod2" to "h1p2" for matrix columns.
func shortName(name string) string {
	return strings.NewReplacer("host", "h", "-pod", "p").Replace(name)
}

// RenderMatrix writes the matrix as a table: one row per source pod, one
// column per destination, "ok" or "FAIL" in each cell and "·" on the
// diagonal.
func RenderMatrix(w io.Writer, m *Matrix) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, p := range m.Pods {
		fmt.Fprintf(tw, "\t%s", shortName(p.Name))
	}
	fmt.Fprintln(tw)
	for i, p := range m.Pods {
		fmt.Fprintf(tw, "%s %s", shortName(p.Name), p.Addr)
		for j := range m.Pods {
			cell := "ok"
			switch {
			case i == j:
				cell = "·"
			case !m.OK[i][j]:
				cell = "FAIL"
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
