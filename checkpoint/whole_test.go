package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"
)

// TestWholeAnswerValve: a directory of 60 entries renamed through 60
// names, each old name made a directory again, leaves 60 × 60 old names
// that a copy may hold (docs/design.md, "Size"). With BACKING's inodes
// counted, that passes 8 × (inodes + records): the answer says full, with
// no path and why, and the consumer's state says full, so a bless that
// does not say full is refused. A whole copy and a full bless end it, and
// the next answer lists paths again. Without the count there is no valve,
// and the answer lists the names.
func TestWholeAnswerValve(t *testing.T) {
	storm := func(count bool) *oldNamesWorld {
		w := newOldNamesWorld(t)
		w.f.back.countInodes = count
		w.mkdir("d")
		for i := range 60 {
			w.write(fmt.Sprintf("d/f%d", i))
		}
		w.round()
		name := "d"
		for i := range 60 {
			next := fmt.Sprintf("n%d", i)
			w.rename(name, next)
			w.mkdir(name)
			name = next
		}
		return w
	}

	w := storm(false)
	if n := w.round(); n < 60*60 || w.f.tr.WholeAnswers() != 0 {
		t.Fatalf("without a count of the inodes: %d lines, %d whole answers; want the names listed (over 3,600)", n, w.f.tr.WholeAnswers())
	}

	w = storm(true)
	a := w.f.query()
	if !a.Full || len(a.Entries) != 0 || !strings.Contains(a.FullWhy, "copy the whole tree") || w.f.tr.WholeAnswers() != 1 {
		t.Fatalf("answer: full %v, %d paths, why %q, %d whole answers; want full, no path, a reason, 1",
			a.Full, len(a.Entries), a.FullWhy, w.f.tr.WholeAnswers())
	}
	if out, _ := io.ReadAll(a.Render(FormatJSON, nil)); !strings.Contains(string(out), `"full":true`) || !strings.Contains(string(out), `"full_why":`) {
		t.Errorf("the JSON header does not say full and why: %s", out)
	}
	if _, err := w.f.tr.Bless(a.Query); !errors.Is(err, ErrFullCopy) {
		t.Fatalf("a plain bless of the whole answer: %v, want ErrFullCopy", err)
	}
	if b := w.f.query(); !b.Full {
		t.Fatalf("the answer after a refused bless is not full")
	}
	// The consumer copies the whole tree, then blesses full.
	w.f.back.mu.Lock()
	w.dest = maps.Clone(w.f.back.cur)
	w.f.back.mu.Unlock()
	if _, err := w.f.tr.BlessWith(Blessing{ID: w.f.tr.stateNow().LastQuery, Full: true}); err != nil {
		t.Fatalf("full bless: %v", err)
	}
	// The valve on the first query of a run: after a crash, when the
	// old names are found by path.
	w2 := storm(true)
	w2.f.crash(false)
	if a := w2.f.query(); !a.Full || len(a.Entries) != 0 {
		t.Errorf("the first query after a crash: full %v, %d paths; want full, no path", a.Full, len(a.Entries))
	}

	w.write("n59/new")
	if n := w.round(); n == 0 || n > 10 || w.f.tr.WholeAnswers() != 1 {
		t.Errorf("after the full bless: %d lines, %d whole answers; want the new file listed, no more whole answers", n, w.f.tr.WholeAnswers())
	}
}
