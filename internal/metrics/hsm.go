package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// HSM is what the collector reads from the mount's HSM (internal/hsm,
// adapted by the daemon).
type HSM interface {
	// States counts the files with an HSM state, and their archived
	// bytes, per state name (archived, released, dirty, ...).
	States() (files, bytes map[string]int64)
	// Transitions counts the transitions since the mount.
	Transitions() []Transition
	// Tiers are the tiers' ids, for the series of an idle tier.
	Tiers() []uint32
}

// Transition counts the transitions of one kind on one tier.
type Transition struct {
	Op      string // archive, release, restore, remove, read
	Tier    uint32
	Failed  bool
	Count   uint64
	Seconds float64
	Bytes   int64
}

var (
	descHSMFiles = prometheus.NewDesc("hsmfs_hsm_files",
		"Files with an HSM state, per state (a file is counted once for each of its states: archived, released, dirty, lost, norelease, noarchive).",
		[]string{"state"}, nil)
	descHSMBytes = prometheus.NewDesc("hsmfs_hsm_bytes",
		"The archived sizes of those files, per state: released bytes are the space that the HSM freed.",
		[]string{"state"}, nil)
	descHSMTransitions = prometheus.NewDesc("hsmfs_hsm_transitions_total",
		"HSM transitions since the mount, per operation (archive, release, restore, remove; read: a released file read from its tier for hsmfs sync or follow), tier and result.",
		[]string{"op", "tier", "result"}, nil)
	descHSMSeconds = prometheus.NewDesc("hsmfs_hsm_transition_seconds_total",
		"Their total duration: divided by the count, the mean latency (a restore's is what an open of a released file waits).",
		[]string{"op", "tier", "result"}, nil)
	descHSMMoved = prometheus.NewDesc("hsmfs_hsm_transfer_bytes_total",
		"Content moved to or from the tier by those transitions (a release counts the bytes it freed).",
		[]string{"op", "tier", "result"}, nil)
)

type hsmCollector struct{ h HSM }

// WatchHSM registers the collector that reads the HSM at scrape time.
func (m *Metrics) WatchHSM(h HSM) { m.reg.MustRegister(&hsmCollector{h}) }

func (c *hsmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHSMFiles, descHSMBytes, descHSMTransitions, descHSMSeconds, descHSMMoved} {
		ch <- d
	}
}

func (c *hsmCollector) Collect(ch chan<- prometheus.Metric) {
	files, bytes := c.h.States()
	for _, s := range []string{"archived", "released", "dirty", "lost", "norelease", "noarchive"} {
		ch <- prometheus.MustNewConstMetric(descHSMFiles, prometheus.GaugeValue, float64(files[s]), s)
		ch <- prometheus.MustNewConstMetric(descHSMBytes, prometheus.GaugeValue, float64(bytes[s]), s)
	}
	seen := map[[2]string]bool{}
	for _, t := range c.h.Transitions() {
		result := "ok"
		if t.Failed {
			result = "failed"
		}
		tier := strconv.FormatUint(uint64(t.Tier), 10)
		seen[[2]string{t.Op, tier}] = seen[[2]string{t.Op, tier}] || !t.Failed
		ch <- prometheus.MustNewConstMetric(descHSMTransitions, prometheus.CounterValue, float64(t.Count), t.Op, tier, result)
		ch <- prometheus.MustNewConstMetric(descHSMSeconds, prometheus.CounterValue, t.Seconds, t.Op, tier, result)
		ch <- prometheus.MustNewConstMetric(descHSMMoved, prometheus.CounterValue, float64(t.Bytes), t.Op, tier, result)
	}
	// An idle tier has its series at 0, so that rate() works from the
	// start.
	for _, id := range c.h.Tiers() {
		tier := strconv.FormatUint(uint64(id), 10)
		for _, op := range []string{"archive", "release", "restore", "remove", "read"} {
			if !seen[[2]string{op, tier}] {
				ch <- prometheus.MustNewConstMetric(descHSMTransitions, prometheus.CounterValue, 0, op, tier, "ok")
			}
		}
	}
}
