package lifecycle

import (
	"log/slog"
	"net"

	"github.com/hsmfs/hsmfs/checkpoint"
	hfs "github.com/hsmfs/hsmfs/fs"
	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/internal/metrics"
	"github.com/hsmfs/hsmfs/journal"
)

// metricsWiring connects --metrics to the core packages. A nil
// *metricsWiring (no --metrics) leaves every option as it was, so serve
// reads the same with metrics on or off, and the hot path has no hook at
// all when they are off.
type metricsWiring struct {
	m   *metrics.Metrics
	l   net.Listener
	srv *metrics.Server
}

// newMetricsWiring listens on addr; "" means no metrics (nil, nil).
func newMetricsWiring(addr, version string) (*metricsWiring, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := metrics.Listen(addr)
	if err != nil {
		return nil, err
	}
	return &metricsWiring{m: metrics.New(version), l: l}, nil
}

func (w *metricsWiring) journalOptions(o journal.Options) journal.Options {
	if w != nil {
		o.OnSync = w.m.ObserveSync
	}
	return o
}

func (w *metricsWiring) trackerOptions(o checkpoint.Options) checkpoint.Options {
	if w != nil {
		o.OnQuery, o.OnBless = w.m.ObserveQuery, w.m.ObserveBless
	}
	return o
}

func (w *metricsWiring) fsConfig(c hfs.Config) hfs.Config {
	if w != nil {
		c.OnJournalError = w.m.CountJournalError
	}
	return c
}

// addr is the address bound (with the port that port 0 picked), or "".
// outsideFound reports the check at mount.
func (w *metricsWiring) outsideFound(n int) {
	if w != nil {
		w.m.SetOutsideFound(n)
	}
}

func (w *metricsWiring) addr() string {
	if w == nil {
		return ""
	}
	return w.l.Addr().String()
}

// serve starts answering scrapes; the mount is live, so every source is
// there.
func (w *metricsWiring) serve(tr *checkpoint.Tracker, j *journal.Journal, hm *hsm.Manager, srv *hfs.Server, log *slog.Logger) {
	if w == nil {
		return
	}
	w.m.Watch(tr, j)
	w.m.WatchNodes(srv.Nodes)
	w.m.WatchHSM(hsmStats{hm})
	w.srv = w.m.Serve(w.l, log)
	log.Info("metrics: serving", "url", "http://"+w.addr()+"/metrics")
}

// close stops the server, or releases the listener of a mount that
// failed before serving.
func (w *metricsWiring) close(log *slog.Logger) {
	if w == nil {
		return
	}
	if w.srv == nil {
		w.l.Close()
		return
	}
	if err := w.srv.Close(); err != nil {
		log.Warn("metrics", "err", err)
	}
}

// hsmStats adapts the HSM to what the metrics read.
type hsmStats struct{ m *hsm.Manager }

func (h hsmStats) States() (files, bytes map[string]int64) {
	c := h.m.Count()
	return c.Files, c.Bytes
}

func (h hsmStats) Transitions() []metrics.Transition {
	var out []metrics.Transition
	for _, t := range h.m.Transitions() {
		out = append(out, metrics.Transition{Op: string(t.Op), Tier: t.Tier, Failed: t.Failed, Count: t.Count, Seconds: t.Seconds, Bytes: t.Bytes})
	}
	return out
}

func (h hsmStats) Tiers() []uint32 {
	var out []uint32
	for _, t := range h.m.Tiers() {
		out = append(out, t.ID)
	}
	return out
}
