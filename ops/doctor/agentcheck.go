package doctor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// checkAgent asks the agent's /readyz and reads its error counters from
// /metrics.
func (n *node) checkAgent(ctx context.Context) []Result {
	ready := Result{Check: "agent ready"}
	errs := Result{Check: "agent errors"}
	if n.o.HealthzURL == "" {
		ready.Status, ready.Verdict = Skipped, "weftd serves no health endpoint (-healthz-port 0); give weft doctor weftd's -healthz-port"
		errs.Status, errs.Verdict = Skipped, ready.Verdict
		return []Result{ready, errs}
	}
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.o.HealthzURL+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/readyz")
	switch {
	case err != nil:
		ready.Status, ready.Verdict = Problem, "weftd does not answer at "+n.o.HealthzURL+"/readyz"
		ready.Cause = err.Error() + " (weftd is not running, or listens elsewhere: weft doctor takes weftd's -healthz-ip and -healthz-port)"
		ready.Fix = []string{"systemctl status weftd; journalctl -u weftd -n 50"}
		errs.Status, errs.Verdict = Unknown, "cannot read the agent's metrics"
		return []Result{ready, errs}
	case code != http.StatusOK:
		ready.Status, ready.Verdict = Problem, "weftd is not ready: "+strings.TrimSpace(body)
		ready.Cause = "it has no lease yet, has not programmed its peers, or lost its watch of etcd"
		ready.Fix = []string{"journalctl -u weftd -n 50   # the reason is in its log"}
	default:
		ready.Status, ready.Verdict = OK, "weftd is "+strings.TrimSpace(body)
	}
	code, body, err = get("/metrics")
	if err != nil || code != http.StatusOK {
		errs.Status, errs.Verdict = Unknown, "cannot read "+n.o.HealthzURL+"/metrics"
		return []Result{ready, errs}
	}
	m := parseMetrics(body)
	rec, runs, restarts := m["weft_reconcile_errors_total"], m["weft_reconcile_runs_total"], m["weft_watch_restarts_total"]
	if rec > 0 {
		errs.Status = Warn
		errs.Verdict = fmt.Sprintf("%d of %d reconciles reported errors since weftd started (lease watch re-established %d times)", int(rec), int(runs), int(restarts))
		errs.Cause = "a peer it skipped (an invalid or conflicting lease) or a kernel write that failed; the log names each"
		errs.Fix = []string{"journalctl -u weftd | grep -i level=warn   # or weftd's log file"}
	} else {
		errs.Status = OK
		errs.Verdict = fmt.Sprintf("no reconcile errors in %d runs (lease watch re-established %d times)", int(runs), int(restarts))
	}
	return []Result{ready, errs}
}

// parseMetrics reads the unlabelled samples of a Prometheus text page.
func parseMetrics(body string) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}
