package metrics

import (
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"
)

// Metrics is the registry of one mount and the hooks that feed it.
type Metrics struct {
	reg *prometheus.Registry

	syncSeconds  prometheus.Histogram
	syncRecords  prometheus.Histogram
	querySeconds prometheus.Histogram
	queryFailed  prometheus.Counter
	answerPaths  prometheus.Histogram
	blessSeconds prometheus.Histogram
	blessFailed  prometheus.Counter
	journalErrs  *prometheus.CounterVec
	outside      prometheus.Gauge
}

// The errnos that a refused modification most often gets: exported from
// the start at 0, so that a rate() over them works before the first one.
var commonErrnos = []syscall.Errno{syscall.ENOSPC, syscall.EIO, syscall.EDQUOT, syscall.EROFS}

// New makes the registry with the hook metrics, the Go and process
// collectors and hsmfs_build_info (labelled with version).
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.syncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "hsmfs_journal_sync_duration_seconds",
		Help: "Duration of the journal's device syncs (msync of badger's logs); every durable intent waits for one.",
		// 100 µs to 3.3 s: an NVMe flush to a stalled disk.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.syncRecords = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "hsmfs_journal_sync_records",
		Help: "Records made durable per journal sync (group commit: concurrent intents share a sync; 0 for state only).",
		// 1 to 16384, ×4.
		Buckets: prometheus.ExponentialBuckets(1, 4, 8),
	})
	m.querySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "hsmfs_query_duration_seconds",
		Help: "Duration of successful queries (a read of .hsm/changes), waiting for earlier modifications included.",
		// 1 ms to 262 s, ×4.
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	})
	m.queryFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hsmfs_query_failures_total",
		Help: "Queries that failed (the reader got an error).",
	})
	m.answerPaths = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "hsmfs_answer_paths",
		Help: "Paths per answer of a successful query (_sum: paths answered in all).",
		// 1 to 10 million, ×10.
		Buckets: prometheus.ExponentialBuckets(1, 10, 8),
	})
	m.blessSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hsmfs_bless_duration_seconds",
		Help:    "Duration of successful blesses, syncfs of BACKING included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	})
	m.blessFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hsmfs_bless_failures_total",
		Help: "Blesses that failed or were refused (unknown id, syncfs or journal error).",
	})
	m.journalErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hsmfs_journal_errors_total",
		Help: "Operations refused because the journal could not record their intent (BACKING left alone), by the errno returned.",
	}, []string{"errno"})
	for _, e := range commonErrnos {
		m.journalErrs.WithLabelValues(errnoName(e))
	}
	m.outside = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hsmfs_outside_changes_found",
		Help: "Paths that the check at mount found changed while hsmfs was not running (recorded with the op outside).",
	})
	m.reg.MustRegister(m.syncSeconds, m.syncRecords, m.querySeconds, m.queryFailed, m.answerPaths,
		m.blessSeconds, m.blessFailed, m.journalErrs, m.outside)
	registerCommon(m.reg, version)
	return m
}

// registerCommon registers what every hsmfs registry exports: the Go and
// process collectors and hsmfs_build_info.
func registerCommon(reg *prometheus.Registry, version string) {
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hsmfs_build_info",
		Help:        "Always 1; the labels name the hsmfs version and the Go version that built it.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// SetOutsideFound reports what the check at mount found.
func (m *Metrics) SetOutsideFound(n int) { m.outside.Set(float64(n)) }

// ObserveSync is journal.Options.OnSync.
func (m *Metrics) ObserveSync(d time.Duration, records int) {
	m.syncSeconds.Observe(d.Seconds())
	m.syncRecords.Observe(float64(records))
}

// ObserveQuery is checkpoint.Options.OnQuery.
func (m *Metrics) ObserveQuery(d time.Duration, paths int, err error) {
	if err != nil {
		m.queryFailed.Inc()
		return
	}
	m.querySeconds.Observe(d.Seconds())
	m.answerPaths.Observe(float64(paths))
}

// ObserveBless is checkpoint.Options.OnBless.
func (m *Metrics) ObserveBless(d time.Duration, err error) {
	if err != nil {
		m.blessFailed.Inc()
		return
	}
	m.blessSeconds.Observe(d.Seconds())
}

// CountJournalError is fs.Config.OnJournalError.
func (m *Metrics) CountJournalError(errno syscall.Errno) {
	m.journalErrs.WithLabelValues(errnoName(errno)).Inc()
}

// errnoName is the symbolic name of e ("ENOSPC"): stable across C
// libraries and locales, unlike its message.
func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno%d", int(e))
}

// WatchNodes registers the node budget's gauge and counter: nodes
// reports the nodes that the kernel and hsmfs hold and how many the
// budget asked the kernel to forget (fs.Server.Nodes).
func (m *Metrics) WatchNodes(nodes func() (int, uint64)) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hsmfs_nodes",
		Help: "Files and directories of the mount that the kernel holds, and hsmfs with it (about 500 bytes each); the node budget (--max-nodes) keeps them near it.",
	}, func() float64 { n, _ := nodes(); return float64(n) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "hsmfs_nodes_pruned_total",
		Help: "Nodes that the node budget asked the kernel to forget (those not in use; a pruned name is looked up again when used).",
	}, func() float64 { _, p := nodes(); return float64(p) }))
}
