package bench

import (
	"math"
	"reflect"
	"regexp"
	"testing"
)

// Only the harness's arithmetic is tested here: timings never go into
// pass/fail tests.

func TestRotate(t *testing.T) {
	ts := []string{"raw", "loopback", "hsmfs"}
	want := [][]string{
		{"raw", "loopback", "hsmfs"},
		{"loopback", "hsmfs", "raw"},
		{"hsmfs", "raw", "loopback"},
		{"raw", "loopback", "hsmfs"},
	}
	for rep, w := range want {
		if got := rotate(ts, rep); !reflect.DeepEqual(got, w) {
			t.Errorf("rotate(rep %d) = %v, want %v", rep, got, w)
		}
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if m := median(nil); !math.IsNaN(m) {
		t.Errorf("median empty = %v", m)
	}
}

func metric(goal Goal, higher bool, samples map[string][]float64) *Metric {
	m := &Metric{ID: "x.y", Unit: "MiB/s", Higher: higher, Goal: goal, Targets: []string{"raw", "loopback", "hsmfs"}}
	if !higher {
		m.Section = secTime
	}
	n := len(samples["raw"])
	for i := 0; i < n; i++ {
		m.newRep(rotate(m.Targets, i))
		for tn, s := range samples {
			m.set(tn, s[i])
		}
	}
	return m
}

func TestPairedRatioAndEval(t *testing.T) {
	nan := math.NaN()
	m := metric(Goal{Ref: "raw", Op: ">=", Value: 0.9}, true, map[string][]float64{
		"raw":      {100, 200, 1000},
		"loopback": {50, 100, 500},
		"hsmfs":    {95, 170, nan},
	})
	// Paired ratios 0.95 and 0.85 (rep 3 has no hsmfs sample): median 0.90.
	if r := m.ratio("hsmfs", "raw"); math.Abs(r-0.90) > 1e-9 {
		t.Errorf("ratio = %v, want 0.90", r)
	}
	if got, res := m.eval(); res != "PASS" || math.Abs(got-0.90) > 1e-9 {
		t.Errorf("eval = %v %s, want 0.90 PASS", got, res)
	}
	if v, n := m.median("hsmfs"); n != 2 || v != 132.5 {
		t.Errorf("median hsmfs = %v over %d", v, n)
	}

	tm := metric(Goal{Ref: "loopback", Op: "<=", Value: 1.1}, false, map[string][]float64{
		"raw": {1, 1}, "loopback": {10, 20}, "hsmfs": {12, 24},
	})
	if got, res := tm.eval(); res != "MISS" || math.Abs(got-1.2) > 1e-9 {
		t.Errorf("time eval = %v %s, want 1.2 MISS", got, res)
	}

	abs := &Metric{ID: "p.q", Unit: "s", Goal: Goal{Op: "<=", Value: 3}, Targets: []string{"hsmfs"}, Section: secAbsolute}
	abs.newRep([]string{"hsmfs"})
	abs.set("hsmfs", 2.5)
	if _, res := abs.eval(); res != "PASS" {
		t.Errorf("absolute eval = %s", res)
	}
	abs.Incomplete = true
	if _, res := abs.eval(); res != "INCOMPLETE" {
		t.Errorf("incomplete eval = %s", res)
	}
	abs.newRep([]string{"hsmfs"})
	abs.Samples["hsmfs"] = []float64{nan, nan}
	abs.fail("hsmfs", "boom")
	if _, res := abs.eval(); res != "ERR" {
		t.Errorf("failed eval = %s", res)
	}
}

func TestSelectWorkloads(t *testing.T) {
	ws := allWorkloads(sizesFor(true))
	names := func(ws []*workload) (n []string) {
		for _, w := range ws {
			n = append(n, w.name)
		}
		return n
	}
	if got := names(selectWorkloads(ws, mustRe(t, "^seq"))); !reflect.DeepEqual(got, []string{"seqwrite", "seqread"}) {
		t.Errorf("--only ^seq: %v", got)
	}
	if got := names(selectWorkloads(ws, mustRe(t, `pending\.rss`))); !reflect.DeepEqual(got, []string{"pending"}) {
		t.Errorf("--only pending.rss: %v", got)
	}
}

func mustRe(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return re
}
