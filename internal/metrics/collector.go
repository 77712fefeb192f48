package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/journal"
)

// Tracker is what the collector reads from the checkpoint tracker.
type Tracker interface {
	Records() checkpoint.RecordCounts
	InFlight() int64
	OpenForWrite() int
	Pending() ([]checkpoint.Pending, error)
	OldNameFallbacks() uint64
	OldNamesCapped() uint64
	WholeAnswers() uint64
}

// Journal is what the collector reads from the journal.
type Journal interface {
	Syncs() uint64
	Usage() (journal.Usage, error)
}

// pendingReuse bounds the cost of the pending gauges: a scrape reuses the
// previous scan while it is younger than pendingReuse times that scan's
// duration, so scanning takes at most about 1/pendingReuse of the time,
// however often Prometheus scrapes. A scan of a few thousand records
// takes a millisecond and is reused for ten, i.e. every scrape scans; one
// of a million records (about 0.7 s and 240 MiB of short-lived
// allocations, see checkpoint.Tracker.Pending) is reused for about 7 s.
// A cheaper estimate (counting records instead of distinct paths) would
// save the set but not the scan, which is most of the cost, and would
// disagree with .hsm/status.
const pendingReuse = 10

var (
	descIntents = prometheus.NewDesc("hsmfs_intents_recorded_total",
		"Records the tracker appended to the journal: synced (durable intents, rosters and censuses, re-recorded open files, derived paths of answers) or unsynced (fine records covered by a durable directory intent).",
		[]string{"durability"}, nil)
	descSyncs = prometheus.NewDesc("hsmfs_journal_syncs_total",
		"Device syncs of the journal since the mount (group commit: one covers every intent pending at the time).",
		nil, nil)
	descInFlight = prometheus.NewDesc("hsmfs_modifications_in_flight",
		"Modifications between their intent and their completion (0 at rest; files open for writing are not counted here).",
		nil, nil)
	descOpen = prometheus.NewDesc("hsmfs_open_for_write",
		"Files open for writing through the mount (each counts as modified while open).",
		nil, nil)
	descPending = prometheus.NewDesc("hsmfs_pending_paths",
		"Distinct paths of the records not blessed yet, as .hsm/status pending_paths (renamed directories not expanded).",
		[]string{"consumer"}, nil)
	descOldest = prometheus.NewDesc("hsmfs_oldest_unblessed_change_age_seconds",
		"Age of the oldest record not blessed yet (0 if none): how long the oldest change has waited for a consumer's bless.",
		[]string{"consumer"}, nil)
	descScan = prometheus.NewDesc("hsmfs_pending_scan_duration_seconds",
		"Duration of the journal scan behind the pending gauges (the last one; scrapes reuse a recent scan, see docs).",
		nil, nil)
	descDisk = prometheus.NewDesc("hsmfs_journal_disk_bytes",
		"Bytes that the journal's files take on disk (allocated blocks), by kind of badger file.",
		[]string{"kind"}, nil)
	descFree = prometheus.NewDesc("hsmfs_journal_fs_free_bytes",
		"Free space of the journal's file system (for unprivileged users).",
		nil, nil)
	descReserve = prometheus.NewDesc("hsmfs_journal_reserve_bytes",
		"Free space below which the journal refuses writes with ENOSPC (0: check disabled).",
		nil, nil)
	descLow = prometheus.NewDesc("hsmfs_journal_below_reserve",
		"1 while the journal's free space is below its reserve: every modification through the mount fails with ENOSPC.",
		nil, nil)
	descFallbacks = prometheus.NewDesc("hsmfs_old_name_fallbacks_total",
		"Queries whose old names beneath renamed directories could not be found by inode and took the path rule (records of an older hsmfs, or fine records a crash may have lost); 0 in a run without crashes.",
		nil, nil)
	descCapped = prometheus.NewDesc("hsmfs_old_names_capped_total",
		"Queries whose listing of what a copy may hold beneath names that are not directories now passed its budget (reused inode numbers) and listed each directory beneath one name only from there.",
		nil, nil)
	descWholeAnswers = prometheus.NewDesc("hsmfs_whole_answers_total",
		"Answers that said full (copy the whole tree) because their paths would have passed 8 x (inodes of BACKING's file system + records); 0 in a run without crashes.",
		nil, nil)
)

// collector reads the tracker and the journal at scrape time.
type collector struct {
	tr Tracker
	j  Journal

	mu      sync.Mutex // guards the cache below; held across a scan
	scanned time.Time  // when the cached scan ended (zero: none yet)
	took    time.Duration
	pending []checkpoint.Pending
}

// Watch registers the collector that reads tr and j at scrape time. Call
// it once, before Serve.
func (m *Metrics) Watch(tr Tracker, j Journal) {
	m.reg.MustRegister(&collector{tr: tr, j: j})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIntents, descSyncs, descInFlight, descOpen, descPending,
		descOldest, descScan, descDisk, descFree, descReserve, descLow, descFallbacks, descCapped, descWholeAnswers} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.tr.Records()
	ch <- prometheus.MustNewConstMetric(descIntents, prometheus.CounterValue, float64(r.Synced), "synced")
	ch <- prometheus.MustNewConstMetric(descIntents, prometheus.CounterValue, float64(r.Queued), "unsynced")
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(c.j.Syncs()))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(c.tr.InFlight()))
	ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(c.tr.OpenForWrite()))
	ch <- prometheus.MustNewConstMetric(descFallbacks, prometheus.CounterValue, float64(c.tr.OldNameFallbacks()))
	ch <- prometheus.MustNewConstMetric(descCapped, prometheus.CounterValue, float64(c.tr.OldNamesCapped()))
	ch <- prometheus.MustNewConstMetric(descWholeAnswers, prometheus.CounterValue, float64(c.tr.WholeAnswers()))

	if p, took, err := c.pendingNow(); err != nil {
		// The scrape goes on without these (promhttp.ContinueOnError)
		// and the error is logged.
		ch <- prometheus.NewInvalidMetric(descPending, err)
	} else {
		for _, cp := range p { // the default consumer, then each named one
			age := 0.0
			if !cp.Oldest.IsZero() {
				age = max(time.Since(cp.Oldest).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(cp.Paths), cp.Consumer)
			ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age, cp.Consumer)
		}
		ch <- prometheus.MustNewConstMetric(descScan, prometheus.GaugeValue, took.Seconds())
	}

	if u, err := c.j.Usage(); err != nil {
		ch <- prometheus.NewInvalidMetric(descDisk, err)
	} else {
		for _, k := range []struct {
			kind  string
			bytes int64
		}{{"tables", u.Tables}, {"value_log", u.ValueLog}, {"memtables", u.Memtables}, {"other", u.Other}} {
			ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(k.bytes), k.kind)
		}
		ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(u.Free))
		ch <- prometheus.MustNewConstMetric(descReserve, prometheus.GaugeValue, float64(u.Reserve))
		low := 0.0
		if u.Reserve > 0 && u.Free < u.Reserve {
			low = 1
		}
		ch <- prometheus.MustNewConstMetric(descLow, prometheus.GaugeValue, low)
	}
}

// pendingNow returns a scan of the journal that is recent enough (see
// pendingReuse), scanning again if the cached one is not. A failed scan
// is not cached: the next scrape tries again.
func (c *collector) pendingNow() ([]checkpoint.Pending, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.scanned.IsZero() && time.Since(c.scanned) < pendingReuse*c.took {
		return c.pending, c.took, nil
	}
	start := time.Now()
	p, err := c.tr.Pending()
	if err != nil {
		return nil, 0, err
	}
	c.scanned = time.Now()
	c.took = c.scanned.Sub(start)
	c.pending = p
	return p, c.took, nil
}
