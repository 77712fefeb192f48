package metrics

import (
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Follow is the registry of one hsmfs follow (hsmfs follow --metrics
// ADDR): what its rounds read, copied and acked, and how far behind the
// mount its copy is.
type Follow struct {
	reg                                    *prometheus.Registry
	rounds                                 *prometheus.CounterVec
	messages, answers, paths, bytes, whole prometheus.Counter
	wholePaths                             prometheus.Counter
	pending, lastCopy, lag                 prometheus.Gauge
}

// FollowRound is what one round of hsmfs follow reports.
type FollowRound struct {
	Messages, Answers, Paths, WholePaths, Pending int
	Whole                                         bool
	Bytes                                         int64
	Lag                                           time.Duration // 0: nothing acked
}

// NewFollow makes the registry of a follower.
func NewFollow(version string) *Follow {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "hsmfs_follow_" + name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "hsmfs_follow_" + name, Help: help})
	}
	f := &Follow{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmfs_follow_rounds_total",
			Help: "Rounds, by result: ok, or failed (nothing that the round did not copy was acked; the next round tries again).",
		}, []string{"result"}),
		messages:   counter("messages_total", "Messages read from the stream (again-delivered ones included)."),
		answers:    counter("answers_copied_total", "Whole answers copied and acked."),
		paths:      counter("paths_copied_total", "Paths in the lists handed to rsync."),
		bytes:      counter("transferred_bytes_total", "Bytes that rsync transferred (its \"Total transferred file size\")."),
		whole:      counter("whole_copies_total", "Copies of the whole tree (an answer that says full, a gap in the stream, a lost answer)."),
		wholePaths: counter("whole_paths_total", "Names copied whole because they were directories again at the copy."),
		pending:    gauge("pending_messages", "Messages of answers not yet whole, held unacked."),
		lastCopy:   gauge("last_success_timestamp_seconds", "When the last round succeeded (Unix time)."),
		lag: gauge("lag_seconds", "How long the oldest message that the last round acked had waited in the stream when its copy "+
			"completed: how far the copy was behind the mount (0: it had nothing to copy)."),
	}
	f.rounds.WithLabelValues("ok")
	f.rounds.WithLabelValues("failed")
	f.reg.MustRegister(f.rounds, f.messages, f.answers, f.paths, f.bytes, f.whole, f.wholePaths, f.pending, f.lastCopy, f.lag)
	registerCommon(f.reg, version)
	return f
}

// ObserveRound counts one round; err is its failure.
func (f *Follow) ObserveRound(r FollowRound, err error) {
	f.messages.Add(float64(r.Messages))
	if err != nil {
		f.rounds.WithLabelValues("failed").Inc()
		return
	}
	f.rounds.WithLabelValues("ok").Inc()
	f.answers.Add(float64(r.Answers))
	f.paths.Add(float64(r.Paths))
	f.bytes.Add(float64(r.Bytes))
	f.wholePaths.Add(float64(r.WholePaths))
	if r.Whole {
		f.whole.Inc()
	}
	f.pending.Set(float64(r.Pending))
	f.lastCopy.SetToCurrentTime()
	f.lag.Set(r.Lag.Seconds())
}

// Serve answers scrapes on l in the background. l is closed by Close.
func (f *Follow) Serve(l net.Listener, log *slog.Logger) *Server { return serve(f.reg, l, log) }
