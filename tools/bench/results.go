package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const (
	secThroughput = "throughput" // higher is better; ratios are throughput ratios
	secTime       = "time"       // lower is better; ratios are time ratios
	secAbsolute   = "absolute"   // hsmfs alone, against absolute limits
)

// Goal is a row's target. With Ref: the ratio hsmfs/Ref (of throughputs
// in the throughput section, of times in the time section) compared with
// Value. Without Ref: hsmfs's own median compared with Value. No Op: the
// row is informational.
type Goal struct {
	Ref   string  `json:"ref,omitempty"`
	Op    string  `json:"op,omitempty"` // ">=" or "<="
	Value float64 `json:"value,omitempty"`
}

// Metric is one row: a figure measured on several targets, repeatedly.
type Metric struct {
	ID, Label, Unit, Section string
	Higher                   bool
	Goal                     Goal
	Targets                  []string
	// Samples[target][rep]; NaN where the sample failed or was skipped.
	Samples    map[string][]float64
	Orders     [][]string // the order of the targets in each repetition
	Errors     map[string][]string
	Incomplete bool
}

func (m *Metric) newRep(order []string) {
	if m.Samples == nil {
		m.Samples = map[string][]float64{}
		m.Errors = map[string][]string{}
	}
	for _, t := range m.Targets {
		m.Samples[t] = append(m.Samples[t], math.NaN())
	}
	m.Orders = append(m.Orders, order)
}

func (m *Metric) set(t string, v float64) {
	if s := m.Samples[t]; len(s) > 0 {
		s[len(s)-1] = v
	}
}

func (m *Metric) fail(t, msg string) { m.Errors[t] = append(m.Errors[t], msg) }

func (m *Metric) has(t string) bool {
	for _, x := range m.Targets {
		if x == t {
			return true
		}
	}
	return false
}

// median of the target's good samples, and how many there were.
func (m *Metric) median(t string) (float64, int) {
	var v []float64
	for _, x := range m.Samples[t] {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	return median(v), len(v)
}

// ratio is the median over the repetitions of a's sample divided by b's
// sample of the same repetition: the targets of one repetition ran back
// to back, so they share the machine's load of the moment.
func (m *Metric) ratio(a, b string) float64 {
	sa, sb := m.Samples[a], m.Samples[b]
	var r []float64
	for i := range sa {
		if i < len(sb) && !math.IsNaN(sa[i]) && !math.IsNaN(sb[i]) && sb[i] != 0 {
			r = append(r, sa[i]/sb[i])
		}
	}
	return median(r)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// eval compares hsmfs with the goal: the figure compared, and PASS, MISS,
// INCOMPLETE, ERR, n/a or info.
func (m *Metric) eval() (float64, string) {
	if m.Goal.Op == "" {
		return math.NaN(), "info"
	}
	var got float64
	if m.Goal.Ref != "" {
		got = m.ratio("hsmfs", m.Goal.Ref)
	} else {
		got, _ = m.median("hsmfs")
	}
	switch {
	case math.IsNaN(got) && len(m.Errors["hsmfs"])+len(m.Errors[m.Goal.Ref]) > 0:
		return got, "ERR"
	case math.IsNaN(got):
		return got, "n/a"
	case m.Incomplete:
		return got, "INCOMPLETE"
	}
	const eps = 1e-9 // 0.95 and 0.85 have the median 0.90, not 0.8999...
	ok := (m.Goal.Op == ">=" && got >= m.Goal.Value-eps) || (m.Goal.Op == "<=" && got <= m.Goal.Value+eps)
	if ok {
		return got, "PASS"
	}
	return got, "MISS"
}

func (m *Metric) targetText() string {
	g := m.Goal
	if g.Op == "" {
		return "-"
	}
	if g.Ref == "" {
		return fmt.Sprintf("%s %s %s", g.Op, fmtNum(g.Value), m.Unit)
	}
	s := fmt.Sprintf("hsmfs/%s %s %.2f", g.Ref, g.Op, g.Value)
	if m.Section == secTime {
		s += " (time)"
	}
	if !m.has(g.Ref) {
		return s
	}
	if g.Ref == "badger" {
		v, _ := m.median("badger")
		s += fmt.Sprintf(" (badger %s/s)", fmtNum(v))
	}
	return s
}

func (m *Metric) reps() int { return len(m.Orders) }

func (m *Metric) errCount() int {
	n := 0
	for _, e := range m.Errors {
		n += len(e)
	}
	return n
}

// Results is everything one run measured.
type Results struct {
	cfg      *config
	sz       sizes
	Start    time.Time
	Duration time.Duration
	Env      string
	Metrics  []*Metric
	Notes    []string
	errors   int
}

func newResults(cfg *config, sz sizes) *Results {
	return &Results{cfg: cfg, sz: sz, Start: time.Now()}
}

func (r *Results) Add(m *Metric)   { r.Metrics = append(r.Metrics, m) }
func (r *Results) Note(s string)   { r.Notes = append(r.Notes, s) }
func (r *Results) ErrorCount() int { return r.errors }
func (r *Results) section(s string) []*Metric {
	var out []*Metric
	for _, m := range r.Metrics {
		if m.Section == s {
			out = append(out, m)
		}
	}
	return out
}

// fmtNum prints about three significant digits.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "-"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func (m *Metric) cell(t string) string {
	if !m.has(t) {
		return ""
	}
	v, _ := m.median(t)
	if math.IsNaN(v) && len(m.Errors[t]) > 0 {
		return "ERR"
	}
	return fmtNum(v)
}

// Table renders the three sections and the notes.
func (r *Results) Table() string {
	var b bytes.Buffer
	mode := "full run"
	if r.cfg.short {
		mode = "SHORT run (smaller sizes, see above; not comparable with a full run)"
	}
	fmt.Fprintf(&b, "hsmfs benchmark, %s, %s, up to %d repetitions, %s\n", mode,
		r.Start.UTC().Format("2006-01-02 15:04 UTC"), r.cfg.reps, r.Duration.Round(time.Second))
	if r.Env != "" {
		b.WriteString(r.Env + "\n")
	}
	b.WriteString("raw/loopback/hsmfs columns: medians over the n repetitions. Ratio columns: median of the\n" +
		"per-repetition ratios (the targets of one repetition ran back to back, in rotating order).\n")

	for _, sec := range []struct {
		name, head, kind string
	}{
		{secThroughput, "THROUGHPUT, higher is better. Ratio columns are THROUGHPUT ratios (>1: the first is faster).", "thru"},
		{secTime, "TIME, lower is better. Ratio columns are TIME ratios (<1: the first is faster).", "time"},
	} {
		ms := r.section(sec.name)
		if len(ms) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s\n", sec.head)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		k := sec.kind
		fmt.Fprintf(tw, "workload\tunit\tn\traw\tloopback\thsmfs\t%s hsmfs/raw\t%s hsmfs/loopback\t%s loopback/raw\ttarget\tgot\tresult\n", k, k, k)
		for _, m := range ms {
			got, res := m.eval()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Label, m.Unit, m.reps(),
				m.cell("raw"), m.cell("loopback"), m.cell("hsmfs"),
				fmtRatio(m.ratio("hsmfs", "raw")), fmtRatio(m.ratio("hsmfs", "loopback")), fmtRatio(m.ratio("loopback", "raw")),
				m.targetText(), fmtRatio(got), res)
		}
		tw.Flush()
	}
	if ms := r.section(secAbsolute); len(ms) > 0 {
		b.WriteString("\nHSMFS ALONE, against absolute limits.\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "workload\tunit\tn\thsmfs\ttarget\tresult\n")
		for _, m := range ms {
			_, res := m.eval()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", m.Label, m.Unit, m.reps(), m.cell("hsmfs"), m.targetText(), res)
		}
		tw.Flush()
	}
	pass, miss := 0, 0
	for _, m := range r.Metrics {
		switch _, res := m.eval(); res {
		case "PASS":
			pass++
		case "MISS", "INCOMPLETE", "ERR":
			miss++
		}
	}
	fmt.Fprintf(&b, "\ntargets: %d PASS, %d not met (MISS/INCOMPLETE/ERR). Informational: a miss never fails the build.\n", pass, miss)
	notes := append([]string(nil), r.Notes...)
	seen := map[string]bool{}
	for _, m := range r.Metrics {
		for _, t := range m.Targets {
			for _, e := range m.Errors[t] {
				// A failed sample fails every row of its workload: say it once.
				n := fmt.Sprintf("%s on %s: %s", m.ID[:strings.LastIndex(m.ID+".", ".")], t, e)
				if !seen[n] {
					seen[n] = true
					notes = append(notes, n)
				}
			}
		}
	}
	if len(notes) > 0 {
		b.WriteString("notes:\n")
		for _, n := range notes {
			b.WriteString("  - " + n + "\n")
		}
	}
	return b.String()
}

// --- files ---

type jsonRow struct {
	ID         string                `json:"id"`
	Label      string                `json:"label"`
	Section    string                `json:"section"`
	Unit       string                `json:"unit"`
	Better     string                `json:"better"`
	RatioKind  string                `json:"ratio_kind"`
	Reps       int                   `json:"reps"`
	Median     map[string]*float64   `json:"median"`
	Ratios     map[string]*float64   `json:"ratios"`
	Goal       *Goal                 `json:"goal,omitempty"`
	Target     string                `json:"target"`
	Got        *float64              `json:"got"`
	Result     string                `json:"result"`
	Incomplete bool                  `json:"incomplete,omitempty"`
	Samples    map[string][]*float64 `json:"samples"`
	Order      [][]string            `json:"order"`
	Errors     map[string][]string   `json:"errors,omitempty"`
}

func fp(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func (r *Results) jsonDoc() map[string]any {
	var rows []jsonRow
	for _, m := range r.Metrics {
		got, res := m.eval()
		row := jsonRow{ID: m.ID, Label: m.Label, Section: m.Section, Unit: m.Unit, Reps: m.reps(),
			Median: map[string]*float64{}, Ratios: map[string]*float64{}, Target: m.targetText(),
			Got: fp(got), Result: res, Incomplete: m.Incomplete, Samples: map[string][]*float64{}, Order: m.Orders}
		row.Better, row.RatioKind = "lower", "time"
		if m.Higher {
			row.Better, row.RatioKind = "higher", "throughput"
		}
		if m.Goal.Op != "" {
			g := m.Goal
			row.Goal = &g
		}
		for _, t := range m.Targets {
			v, _ := m.median(t)
			row.Median[t] = fp(v)
			for _, x := range m.Samples[t] {
				row.Samples[t] = append(row.Samples[t], fp(x))
			}
		}
		for _, p := range [][2]string{{"hsmfs", "raw"}, {"hsmfs", "loopback"}, {"loopback", "raw"}, {"hsmfs", "badger"}} {
			if m.has(p[0]) && m.has(p[1]) {
				row.Ratios[p[0]+"/"+p[1]] = fp(m.ratio(p[0], p[1]))
			}
		}
		if m.errCount() > 0 {
			row.Errors = m.Errors
		}
		rows = append(rows, row)
	}
	only := ""
	if r.cfg.only != nil {
		only = r.cfg.only.String()
	}
	host, _ := os.Hostname()
	return map[string]any{
		"schema":      1,
		"date":        r.Start.UTC().Format(time.RFC3339),
		"duration_s":  math.Round(r.Duration.Seconds()),
		"short":       r.cfg.short,
		"reps":        r.cfg.reps,
		"only":        only,
		"loop":        r.cfg.loop,
		"loop_fs":     r.cfg.loopFS,
		"hsmfs_args":  r.cfg.hsmfsArgs,
		"host":        host,
		"cpus":        numCPU(),
		"kernel":      kernelRelease(),
		"environment": r.Env,
		"sizes": map[string]any{
			"seq_bytes": r.sz.seqBytes, "meta_files": r.sz.metaFiles, "parallel_workers": r.sz.parWorkers,
			"build_subset": r.sz.buildSubset, "intent_writers": r.sz.intentWriters, "intent_seconds": r.sz.intentDur.Seconds(),
			"pending_paths": r.sz.pendingPaths,
		},
		"rows":  rows,
		"notes": r.Notes,
	}
}

// Write stores NAME.{txt,json,csv}, NAME-samples.csv and a dated copy of
// the JSON under history/.
func (r *Results) Write(dir, name, table string) error {
	if err := os.MkdirAll(filepath.Join(dir, "history"), 0o755); err != nil {
		return err
	}
	var jb bytes.Buffer
	enc := json.NewEncoder(&jb)
	enc.SetEscapeHTML(false) // ">=" stays readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(r.jsonDoc()); err != nil {
		return err
	}
	js := jb.Bytes()
	var sum, samp bytes.Buffer
	cw := csv.NewWriter(&sum)
	cw.Write([]string{"id", "label", "section", "unit", "better", "ratio_kind", "reps", "raw", "loopback", "hsmfs", "badger",
		"hsmfs/raw", "hsmfs/loopback", "loopback/raw", "target", "got", "result"})
	sw := csv.NewWriter(&samp)
	sw.Write([]string{"id", "unit", "target", "rep", "position", "value"})
	num := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	for _, m := range r.Metrics {
		got, res := m.eval()
		med := func(t string) string {
			if !m.has(t) {
				return ""
			}
			v, _ := m.median(t)
			return num(v)
		}
		ratio := func(a, b string) string {
			if !m.has(a) || !m.has(b) {
				return ""
			}
			return num(m.ratio(a, b))
		}
		better, kind := "lower", "time"
		if m.Higher {
			better, kind = "higher", "throughput"
		}
		cw.Write([]string{m.ID, m.Label, m.Section, m.Unit, better, kind, strconv.Itoa(m.reps()),
			med("raw"), med("loopback"), med("hsmfs"), med("badger"),
			ratio("hsmfs", "raw"), ratio("hsmfs", "loopback"), ratio("loopback", "raw"),
			m.targetText(), num(got), res})
		for _, t := range m.Targets {
			for i, v := range m.Samples[t] {
				pos := ""
				if i < len(m.Orders) {
					for j, x := range m.Orders[i] {
						if x == t {
							pos = strconv.Itoa(j + 1)
						}
					}
				}
				sw.Write([]string{m.ID, m.Unit, t, strconv.Itoa(i + 1), pos, num(v)})
			}
		}
	}
	cw.Flush()
	sw.Flush()
	kind := "full"
	if r.cfg.short {
		kind = "short"
	}
	if r.cfg.only != nil {
		kind += "-partial"
	}
	files := map[string][]byte{
		name + ".txt":         []byte(table),
		name + ".json":        js,
		name + ".csv":         sum.Bytes(),
		name + "-samples.csv": samp.Bytes(),
		filepath.Join("history", r.Start.UTC().Format("20060102-150405")+"-"+kind+".json"): js,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func numCPU() int { return runtime.NumCPU() }
