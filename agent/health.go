package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HealthHandler serves /healthz (the process is up), /readyz (the agent is
// ready: lease held, subnet.env written, peers programmed, watch live) and
// /metrics (Prometheus).
func (a *Agent) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := a.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		own := a.Own()
		switch {
		case own.Subnet.IsValid() && own.IPv6Subnet.IsValid():
			fmt.Fprintf(w, "ready: subnet %s, IPv6 subnet %s\n", own.Subnet, own.IPv6Subnet)
		case own.IPv6Subnet.IsValid():
			fmt.Fprintf(w, "ready: IPv6 subnet %s\n", own.IPv6Subnet)
		default:
			fmt.Fprintf(w, "ready: subnet %s\n", own.Subnet)
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.Registry, promhttp.HandlerOpts{}))
	return mux
}

// ServeHealth listens on addr and serves HealthHandler until ctx ends.
func (a *Agent) ServeHealth(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health server: listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: a.HealthHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving /healthz, /readyz and /metrics", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health server on %s: %w", addr, err)
	}
	return nil
}
