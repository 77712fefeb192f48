package metrics

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/journal"
)

type fakeTracker struct {
	mu    sync.Mutex
	scans int
	delay time.Duration // each Pending takes this long
	err   error
	p     checkpoint.Pending
}

func (f *fakeTracker) Records() checkpoint.RecordCounts {
	return checkpoint.RecordCounts{Synced: 7, Queued: 3}
}
func (f *fakeTracker) InFlight() int64          { return 2 }
func (f *fakeTracker) OpenForWrite() int        { return 1 }
func (f *fakeTracker) OldNameFallbacks() uint64 { return 0 }
func (f *fakeTracker) WholeAnswers() uint64     { return 0 }
func (f *fakeTracker) OldNamesCapped() uint64   { return 0 }
func (f *fakeTracker) Pending() ([]checkpoint.Pending, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans++
	time.Sleep(f.delay)
	p := f.p
	p.Consumer = checkpoint.DefaultConsumer
	return []checkpoint.Pending{p, {Consumer: "backup", Paths: 3}}, f.err
}

type fakeJournal struct{}

func (fakeJournal) Syncs() uint64 { return 5 }
func (fakeJournal) Usage() (journal.Usage, error) {
	return journal.Usage{Tables: 1, ValueLog: 2, Memtables: 3, Other: 4, Free: 1000, Reserve: 64}, nil
}

// gather returns the families by name, and the error of Gather.
func gather(t *testing.T, m *Metrics) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	fams, err := m.reg.Gather()
	out := make(map[string]*dto.MetricFamily)
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out, err
}

// value returns the value of the series of family name whose labels
// include labels (name=value pairs).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestCollector(t *testing.T) {
	m := New("test")
	tr := &fakeTracker{p: checkpoint.Pending{Paths: 42, Oldest: time.Now().Add(-time.Minute)}}
	m.Watch(tr, fakeJournal{})
	m.ObserveSync(3*time.Millisecond, 10)
	m.ObserveSync(time.Millisecond, 0)
	m.ObserveQuery(time.Second, 12, nil)
	m.ObserveQuery(time.Second, 0, errors.New("boom"))
	m.ObserveBless(time.Second, nil)
	m.ObserveBless(time.Second, errors.New("refused"))
	m.CountJournalError(syscall.ENOSPC)
	m.CountJournalError(syscall.ENOSPC)
	m.CountJournalError(syscall.Errno(4095)) // no name

	fams, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hsmfs_intents_recorded_total", []string{"durability", "synced"}, 7},
		{"hsmfs_intents_recorded_total", []string{"durability", "unsynced"}, 3},
		{"hsmfs_journal_syncs_total", nil, 5},
		{"hsmfs_journal_sync_duration_seconds", nil, 2},
		{"hsmfs_journal_sync_records", nil, 2},
		{"hsmfs_modifications_in_flight", nil, 2},
		{"hsmfs_open_for_write", nil, 1},
		{"hsmfs_pending_paths", []string{"consumer", "default"}, 42},
		{"hsmfs_pending_paths", []string{"consumer", "backup"}, 3},
		{"hsmfs_query_duration_seconds", nil, 1},
		{"hsmfs_query_failures_total", nil, 1},
		{"hsmfs_answer_paths", nil, 1},
		{"hsmfs_bless_duration_seconds", nil, 1},
		{"hsmfs_bless_failures_total", nil, 1},
		{"hsmfs_journal_errors_total", []string{"errno", "ENOSPC"}, 2},
		{"hsmfs_journal_errors_total", []string{"errno", "EIO"}, 0},
		{"hsmfs_journal_errors_total", []string{"errno", "errno4095"}, 1},
		{"hsmfs_journal_disk_bytes", []string{"kind", "tables"}, 1},
		{"hsmfs_journal_disk_bytes", []string{"kind", "value_log"}, 2},
		{"hsmfs_journal_disk_bytes", []string{"kind", "memtables"}, 3},
		{"hsmfs_journal_disk_bytes", []string{"kind", "other"}, 4},
		{"hsmfs_journal_fs_free_bytes", nil, 1000},
		{"hsmfs_journal_reserve_bytes", nil, 64},
		{"hsmfs_build_info", []string{"version", "test"}, 1},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if age := value(t, fams, "hsmfs_oldest_unblessed_change_age_seconds", "consumer", "default"); age < 59 || age > 120 {
		t.Errorf("oldest change age %v s, want about 60", age)
	}
	for _, std := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[std] == nil {
			t.Errorf("standard metric %s missing", std)
		}
	}
	for name := range fams {
		if !strings.HasPrefix(name, "hsmfs_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s: not hsmfs_, go_ or process_", name)
		}
	}
}

// TestPendingReuse: a slow scan is reused for a while; a fast one is not;
// a failed one drops the pending gauges only.
func TestPendingReuse(t *testing.T) {
	m := New("test")
	tr := &fakeTracker{delay: 20 * time.Millisecond}
	m.Watch(tr, fakeJournal{})
	gather(t, m)
	gather(t, m) // within 10 × 20 ms
	if tr.scans != 1 {
		t.Errorf("%d scans for two scrapes 200 ms apart at most: the slow scan was not reused", tr.scans)
	}
	time.Sleep(250 * time.Millisecond)
	tr.delay = 0
	gather(t, m)
	time.Sleep(5 * time.Millisecond)
	gather(t, m)
	if tr.scans != 3 {
		t.Errorf("%d scans, want 3: a stale or fast scan was reused", tr.scans)
	}

	time.Sleep(5 * time.Millisecond)
	tr.err = errors.New("journal closed")
	fams, err := gather(t, m)
	if err == nil || !strings.Contains(err.Error(), "journal closed") {
		t.Errorf("Gather with a failing scan: %v", err)
	}
	if fams["hsmfs_pending_paths"] != nil {
		t.Errorf("pending paths reported although the scan failed")
	}
	if value(t, fams, "hsmfs_journal_syncs_total") != 5 {
		t.Errorf("the other metrics went with the failed scan")
	}
}

func TestServer(t *testing.T) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New("test")
	m.Watch(&fakeTracker{}, fakeJournal{})
	s := m.Serve(l, nil)
	defer s.Close()
	base := "http://" + l.Addr().String()

	// The address is taken: a second mount with it is refused.
	if l2, err := Listen(l.Addr().String()); err == nil {
		l2.Close()
		t.Errorf("Listen on an address in use succeeded")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on an address in use: %v, want EADDRINUSE", err)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	if fams["hsmfs_pending_paths"] == nil || fams["go_goroutines"] == nil {
		t.Errorf("/metrics lacks hsmfs_pending_paths or go_goroutines")
	}
	resp, err = http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /: %s, want 404", resp.Status)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Errorf("the server still answers after Close")
	}

	if _, err := Listen("127.0.0.1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("Listen without a port: %v", err)
	}
}

// BenchmarkHooks: what the hooks add where they run (once per sync,
// query or refused operation).
func BenchmarkHooks(b *testing.B) {
	m := New("bench")
	b.Run("ObserveSync", func(b *testing.B) {
		for b.Loop() {
			m.ObserveSync(time.Millisecond, 8)
		}
	})
	b.Run("CountJournalError", func(b *testing.B) {
		for b.Loop() {
			m.CountJournalError(syscall.ENOSPC)
		}
	})
}
