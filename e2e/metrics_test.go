package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// scrape reads http://addr/metrics and parses it with Prometheus's own
// text parser, which also checks the format.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v: %s", resp.Status, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape: parse: %v\n%s", err, body)
	}
	return fams
}

// series returns the series of family name whose labels include labels
// (name, value, name, value, ...); it fails the test if there is none.
func series(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("scrape: no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range m.GetLabel() {
				ok = ok || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
			}
			if !ok {
				continue next
			}
		}
		return m
	}
	t.Fatalf("scrape: no series %s%v", name, labels)
	return nil
}

// metricValue is the value of a counter or gauge series, or the count of
// a histogram's.
func metricValue(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := series(t, fams, name, labels...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("scrape: %s is neither a counter, a gauge nor a histogram", name)
	return 0
}

// sumValues adds the values of every series of family name.
func sumValues(fams map[string]*dto.MetricFamily, name string) float64 {
	sum := 0.0
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestMetrics mounts with --metrics, makes changes, runs a query and a
// bless, and checks what /metrics says against .hsm/status.
func TestMetrics(t *testing.T) {
	addr := freeAddr(t)
	m := mount(t, withArgs("--metrics", addr))
	if got := status(t, m.Mnt)["metrics"]; got != addr {
		t.Errorf("status metrics = %v, want %s", got, addr)
	}
	// Up as soon as the mount is: mount returned, no waiting here.
	fams := scrape(t, addr)
	if v := metricValue(t, fams, "hsmfs_journal_syncs_total"); v < 1 {
		t.Errorf("right after the mount: %v journal syncs (the mount saves its state durably)", v)
	}

	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	writeFile(t, p("a"), "a\n")
	must(t, os.Mkdir(p("d"), 0o755))
	writeFile(t, p("d/b"), "b\n")
	must(t, os.Rename(p("a"), p("d/a")))
	must(t, os.Chmod(p("d/b"), 0o600))
	waitClosed(t, m.Mnt)
	r := hsm(t, "changes", m.Mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs changes: %v", r)
	}
	answered := len(parsePlain(t, []byte(r.stdout)))
	if r := hsm(t, "bless", fmt.Sprint(queryID(t, r)), m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs bless: %v", r)
	}
	// Pending after the bless: changes of the new period.
	writeFile(t, p("c"), "c\n")
	must(t, os.Symlink("c", p("d/link")))
	waitClosed(t, m.Mnt)

	st := status(t, m.Mnt)
	fams = scrape(t, addr)
	synced := metricValue(t, fams, "hsmfs_intents_recorded_total", "durability", "synced")
	unsynced := metricValue(t, fams, "hsmfs_intents_recorded_total", "durability", "unsynced")
	if synced < 1 || synced+unsynced < 7 {
		t.Errorf("intents recorded: %v synced, %v unsynced; want at least one synced and 7 in all", synced, unsynced)
	}
	syncs := metricValue(t, fams, "hsmfs_journal_syncs_total")
	if syncs < 2 || syncs != float64(num(t, st, "journal_syncs")) {
		t.Errorf("journal syncs %v, status says %d", syncs, num(t, st, "journal_syncs"))
	}
	if n := metricValue(t, fams, "hsmfs_journal_sync_duration_seconds"); n != syncs {
		t.Errorf("sync latency histogram counts %v syncs, the counter %v", n, syncs)
	}
	if h := series(t, fams, "hsmfs_journal_sync_records").GetHistogram(); h.GetSampleSum() < synced {
		t.Errorf("syncs made %v records durable, the tracker synced %v", h.GetSampleSum(), synced)
	}
	if n := metricValue(t, fams, "hsmfs_query_duration_seconds"); n < 1 {
		t.Errorf("query histogram: %v queries", n)
	}
	if h := series(t, fams, "hsmfs_answer_paths").GetHistogram(); h.GetSampleCount() < 1 || h.GetSampleSum() < float64(answered) {
		t.Errorf("answer paths: %d answers, %v paths; the answer had %d", h.GetSampleCount(), h.GetSampleSum(), answered)
	}
	if n := metricValue(t, fams, "hsmfs_bless_duration_seconds"); n < 1 {
		t.Errorf("bless histogram: %v blesses", n)
	}
	for _, f := range []string{"hsmfs_query_failures_total", "hsmfs_bless_failures_total"} {
		if v := metricValue(t, fams, f); v != 0 {
			t.Errorf("%s = %v", f, v)
		}
	}
	// The kernel holds d, d/a, d/b, c and d/link at least; far below the
	// default budget, nothing is pruned.
	if n := metricValue(t, fams, "hsmfs_nodes"); n < 5 || n != float64(num(t, st, "nodes")) {
		t.Errorf("hsmfs_nodes %v, status says %d (want at least 5)", n, num(t, st, "nodes"))
	}
	if n := metricValue(t, fams, "hsmfs_nodes_pruned_total"); n != 0 {
		t.Errorf("hsmfs_nodes_pruned_total %v under the budget", n)
	}
	if v := metricValue(t, fams, "hsmfs_modifications_in_flight"); v != 0 {
		t.Errorf("%v modifications in flight at rest", v)
	}
	if v := metricValue(t, fams, "hsmfs_open_for_write"); v != 0 {
		t.Errorf("%v files open for writing at rest", v)
	}
	pending := metricValue(t, fams, "hsmfs_pending_paths", "consumer", "default")
	if pending < 2 || pending != float64(num(t, st, "pending_paths")) {
		t.Errorf("pending paths %v, status says %d (want at least c and d/link)", pending, num(t, st, "pending_paths"))
	}
	if age := metricValue(t, fams, "hsmfs_oldest_unblessed_change_age_seconds", "consumer", "default"); age < 0 || age > 300 {
		t.Errorf("oldest unblessed change: %v s old", age)
	}
	if v := sumValues(fams, "hsmfs_journal_disk_bytes"); v <= 0 {
		t.Errorf("journal takes %v bytes on disk", v)
	}
	if v := metricValue(t, fams, "hsmfs_journal_fs_free_bytes"); v <= 0 {
		t.Errorf("journal file system has %v bytes free", v)
	}
	if v := sumValues(fams, "hsmfs_journal_errors_total"); v != 0 {
		t.Errorf("%v journal errors", v)
	}
	metricValue(t, fams, "hsmfs_journal_errors_total", "errno", "ENOSPC") // there at 0 from the start
	metricValue(t, fams, "hsmfs_build_info")
	for _, std := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if fams[std] == nil {
			t.Errorf("standard metric %s missing", std)
		}
	}
	m.unmount(t)
	// The port is free again once the daemon is gone.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("after the unmount, %s is still taken: %v", addr, err)
	} else {
		l.Close()
	}
}

// TestMetricsBadAddress: a --metrics address that cannot be listened on
// refuses the mount, with the reason and exit code 1, in the background
// and in the foreground.
func TestMetricsBadAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ addr, says string }{
		{taken.Addr().String(), "address already in use"},
		{"127.0.0.1", "missing port"},
	} {
		for _, fg := range []bool{false, true} {
			backing, mnt, journal := newDirs(t)
			args := []string{"mount", "--journal", journal, "--metrics", c.addr, backing, mnt}
			if fg {
				args = append([]string{"mount", "-f"}, args[1:]...)
			}
			r := hsm(t, args...)
			if isMounted(mnt) {
				forceUnmount(t, mnt, 0)
				t.Errorf("--metrics %s (foreground %v): mounted", c.addr, fg)
			}
			if r.code != 1 || !strings.Contains(r.stderr, "metrics") || !strings.Contains(r.stderr, c.says) {
				t.Errorf("--metrics %s (foreground %v): %v; want exit 1 and a reason naming metrics and %q", c.addr, fg, r, c.says)
			}
			if _, err := os.Stat(journal); err == nil {
				t.Errorf("--metrics %s (foreground %v): the journal was created before the address was checked", c.addr, fg)
			}
		}
	}
}
