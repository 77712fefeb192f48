package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listen binds addr (host:port; port 0 picks a free one). The mount calls
// it before it opens anything, so that an address it cannot listen on
// refuses the mount at once, and so that the port is taken before the
// mount reports ready: a scraper never finds it closed while the mount is
// live.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: cannot listen on %q: %w", addr, err)
	}
	return l, nil
}

// Server serves /metrics until Close.
type Server struct {
	srv  *http.Server
	done chan struct{}
}

// Serve answers scrapes on l in the background. l is closed by Close.
func (m *Metrics) Serve(l net.Listener, log *slog.Logger) *Server { return serve(m.reg, l, log) }

func serve(reg *prometheus.Registry, l net.Listener, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// A failed journal scan drops the pending gauges, not the
		// whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		// Each scrape may scan the journal; more than two at once
		// only queue on the cache's mutex.
		MaxRequestsInFlight: 2,
		Registry:            reg, // promhttp_metric_handler_* of this handler
	}))
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics: server stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
	return s
}

// Close stops the server: it closes the listener, gives scrapes in
// progress up to 5 seconds, then closes their connections.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("metrics: stop server: %w", err)
	}
	return nil
}
