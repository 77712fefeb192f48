package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The model of model_test.go: the consumer's copy and bless, and the
// checks of DEST and of each answer.

// copyPath copies one listed path into DEST.
func (w *mworld) copyPath(p string) { rsyncCopy(w.dest, w.back, p) }

// rsyncCopy is what rsync -a -I --files-from --delete-missing-args
// --force does for one listed path (--files-from implies --relative and
// no recursion; implied directories are created): a path that is gone
// (or cannot exist: an ancestor is not a directory) is deleted from DEST
// with everything beneath; a file replaces whatever DEST had there; a
// directory is created or updated, and what DEST holds beneath it stays.
func rsyncCopy(dest map[string]bnode, back *memBacking, p string) {
	src, ok := back.get(p)
	if !ok || src.typ != typDir {
		for q := range dest {
			if isBeneath(q, p) {
				delete(dest, q)
			}
		}
	}
	if !ok {
		delete(dest, p)
		return
	}
	for par := parentOf(p); par != ""; par = parentOf(par) {
		if n, ok := back.get(par); ok {
			dest[par] = n
		}
	}
	dest[p] = src
}

// plainPaths is the plain answer as rsync reads it.
func plainPaths(a *Answer) []string {
	plain := string(a.Plain())
	if plain == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(plain, "\n"), "\n")
}

func (w *mworld) stepCopy() {
	k := len(w.cons.toCopy)
	if !w.quiet {
		k = 1 + w.ch.choose(len(w.cons.toCopy))
	}
	copied := w.cons.toCopy[:k]
	for _, p := range copied {
		w.copyPath(p)
	}
	w.logf("copy %v", copied)
	w.cons.toCopy = w.cons.toCopy[k:]
}

func (w *mworld) stepBless() {
	id := w.cons.ans.Query
	arg := id
	if !w.quiet && w.ch.choose(3) == 0 {
		arg = 0 // "bless" alone: the latest query, which is ours
	}
	got, err := w.tr.Bless(arg)
	if err != nil {
		w.logf("bless %d: %v (the consumer will query again)", arg, err)
		stale := w.recovered && id < w.recoveredAt && errors.Is(err, ErrUnknownQuery)
		if !injectedErr(err) && !stale {
			w.fail(failAPI, "Bless(%d) failed with an error the model did not inject: %v", arg, err)
		}
		if st := w.store.durableState(); st.LastBlessed != w.blessed {
			w.fail(failAPI, "a failed bless changed the durable LastBlessed from %d to %d", w.blessed, st.LastBlessed)
		}
		w.cons = mconsumer{state: "idle"}
		return
	}
	if got != id {
		w.fail(failAPI, "Bless(%d) returned %d, want %d", arg, got, id)
	}
	w.blesses++
	w.blessed = id
	w.lossSinceBless = w.store.isLost()
	w.renameSinceBless = false
	if w.recovered && id >= w.recoveredAt {
		w.recovered = false
	}
	w.logf("bless %d done", id)
	w.checkDest(fmt.Sprintf("after bless %d", id), w.cons.answerEvt)
	w.cons = mconsumer{state: "idle"}
}

// checkDest is the invariant: a path on which DEST and BACKING differ
// must have changed after the answer that the consumer used.
func (w *mworld) checkDest(when string, answerEvt uint64) {
	w.checkDestOf(w.dest, "", when, answerEvt)
}

// checkDestOf checks one consumer's DEST (who names it in failures).
func (w *mworld) checkDestOf(dest map[string]bnode, who, when string, answerEvt uint64) {
	cur := w.back.copyTree()
	var bad []string
	seen := make(map[string]bool)
	check := func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		d, dok := dest[p]
		s, sok := cur[p]
		if dok == sok && (!dok || (d.typ == s.typ && d.ver == s.ver)) {
			return
		}
		// Changed after the answer: the next query lists it. So for a
		// path beneath one that changed after the answer: what rsync
		// does beneath a listed directory depends on what it is when
		// the consumer copies, and the next query must fix what is
		// stale (the quiet rounds at the end check that it does).
		for q := p; q != ""; q = parentOf(q) {
			if w.lastChange[q] > answerEvt {
				return
			}
		}
		bad = append(bad, fmt.Sprintf("%s: DEST=%s BACKING=%s", p, nodeString(d, dok), nodeString(s, sok)))
	}
	for p := range dest {
		check(p)
	}
	for p := range cur {
		check(p)
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		w.fail(failDest, "%s%s: DEST differs from BACKING on paths that did not change since the answer: %s",
			who+map[bool]string{true: " ", false: ""}[who != ""], when, strings.Join(bad, "; "))
	}
}

func nodeString(n bnode, ok bool) string {
	if !ok {
		return "absent"
	}
	return fmt.Sprintf("%s@v%d", n.typ, n.ver)
}

// checkAnswer compares an answer with what the model knows.
func (w *mworld) checkAnswer(P uint64, a *Answer) {
	if a.Query != P {
		w.fail(failAPI, "answer id %d, want %d", a.Query, P)
	}
	for i := 1; i < len(a.Entries); i++ {
		if a.Entries[i-1].Path >= a.Entries[i].Path {
			w.fail(failAnswer, "answer not sorted/unique at %q, %q", a.Entries[i-1].Path, a.Entries[i].Path)
		}
	}
	if !w.cfg.directChecks {
		return
	}
	if a.Blessed != w.blessed {
		w.fail(failAnswer, "answer says blessed=%d, the model blessed %d", a.Blessed, w.blessed)
	}
	if a.Recovered != w.recovered {
		w.fail(failAnswer, "answer says recovered=%v, want %v", a.Recovered, w.recovered)
	}
	listed := make(map[string]*Entry)
	for i := range a.Entries {
		listed[a.Entries[i].Path] = &a.Entries[i]
	}
	cur := w.back.copyTree()
	lost := w.store.isLost()
	// Fine records (coarse mode) may be missing where the tracker must
	// compensate: runs that ended uncleanly, or this run once the store
	// lost queued records. There the directory intent lists the directory
	// and its entries as they are now.
	mayBeLost := func(n mname) bool {
		return n.fine && (n.run <= w.lastUnclean || (n.run == w.run && lost))
	}
	children := func(dir string) []string {
		var out []string
		for p := range cur {
			if parentOf(p) == dir {
				out = append(out, p)
			}
		}
		return out
	}
	// want: what must be listed; allowed: what may be listed (D4).
	want := make(map[string]bool)
	allowed := make(map[string]bool)
	for _, n := range w.recorded {
		if n.period < a.Blessed {
			if n.dirRename {
				// A renamed directory that an earlier answer
				// carried forward: old names beneath its old name
				// may be listed again (checkpoint/renames.go).
				for p := range listed {
					if isBeneath(p, n.path) {
						allowed[p] = true
					}
				}
			}
			continue
		}
		names := []string{n.path}
		if n.path2 != "" {
			names = append(names, n.path2)
		}
		if n.dirRename {
			for p := range cur {
				if isBeneath(p, n.path) || isBeneath(p, n.path2) {
					names = append(names, p)
				}
			}
		}
		if n.rename {
			// Beneath both names of any rename: what is there now, and
			// the old names of what is beneath the new one, may be listed
			// (moved there, or away). For a rename of a file this is an
			// over-approximation (the tracker cannot know it was a file).
			for p := range listed {
				if isBeneath(p, n.path) || isBeneath(p, n.path2) {
					allowed[p] = true
				}
			}
		}
		for _, p := range names {
			allowed[p] = true
			// A removal's name is in its roster or synced.
			if !mayBeLost(n) || (n.removal && p == n.path) {
				want[p] = true
			}
		}
		if mayBeLost(n) {
			// The directory intent lists the directory and its entries
			// now; a roster lists the directory and the names it held
			// (the old name, wanted above).
			dirs := []string{parentOf(n.path)}
			if n.removal {
				dir := parentOf(n.path)
				allowed[dir], want[dir] = true, dir != ""
				for p := range listed {
					if parentOf(p) == dir {
						allowed[p] = true
					}
				}
				dirs = nil
				if n.rename {
					dirs = []string{parentOf(n.path2)}
				}
			}
			for _, dir := range dirs {
				allowed[dir] = true
				// A directory that is gone now need not be listed
				// (checkpoint/newdirs.go: a new directory covered by
				// an ancestor's intent is listed only if it exists;
				// its removal has its own record or roster).
				_, exists := cur[dir]
				want[dir] = dir != "" && exists
				for _, c := range children(dir) {
					allowed[c], want[c] = true, true
				}
			}
		}
	}
	for p, q := range w.shadowedIn {
		if q >= a.Blessed {
			allowed[p] = true
		}
	}
	for i := range a.Entries {
		if a.Entries[i].Shadowed() {
			if w.shadowedIn == nil {
				w.shadowedIn = make(map[string]uint64)
			}
			w.shadowedIn[a.Entries[i].Path] = a.Query
		}
	}
	delete(want, "")
	var missing, extra []string
	for p, ok := range want {
		if ok && listed[p] == nil {
			missing = append(missing, p)
		}
	}
	for p := range listed {
		if !allowed[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		w.fail(failAnswer, "query %d does not list %v, which modifications of unblessed periods may have changed (store lost queued records: %v)", P, missing, lost)
	}
	// D4 is a promise for runs without crashes only: after a crash the
	// tracker lists what may have changed, derived from BACKING as it is
	// now, and keeps it listed until blessed (docs/design.md).
	if len(extra) > 0 && w.cfg.d4Checks && w.crashes == 0 && !w.queuedLossInjected {
		w.fail(failAnswer, "query %d lists %v, which no modification of an unblessed period touched (D4)", P, extra)
	}
	if !w.cfg.inflightChecks || (w.powerCutSeen && !w.cfg.inflightAfterPowerCut) {
		return
	}
	// Soundness: what was being modified when hsmfs stopped is inflight.
	for _, n := range w.crashInflight {
		if n.period < a.Blessed || !n.busy {
			continue
		}
		for _, p := range []string{n.path, n.path2} {
			if _, exists := cur[p]; n.fine && !exists {
				// Coarse mode: the fine record may be lost, and a name
				// that is gone now is not among the directory's entries.
				continue
			}
			if e := listed[p]; p != "" && e != nil && !e.Inflight {
				w.fail(failInflight, "query %d: %q was being modified when hsmfs stopped, but inflight=false", P, p)
			}
		}
	}
	if w.powerCutSeen {
		return
	}
	// And only that (plus what had ended without its completion recorded
	// yet), as long as no power cut lost completions.
	maybe := make(map[string]bool)
	maybeDir := make(map[string]bool) // anything directly beneath: a roster's names
	// Anything beneath, at any depth: the rosters ahead that a removal's
	// roster took, idle but not completed yet, and the new directories
	// that a directory intent covers (newdirs.go), walked as they are now.
	var maybeTree []string
	for _, n := range w.crashInflight {
		if n.period < a.Blessed {
			continue
		}
		maybe[n.path], maybe[n.path2] = true, true
		if n.dirRename {
			for p := range cur {
				if isBeneath(p, n.path) || isBeneath(p, n.path2) {
					maybe[p] = true
				}
			}
		}
		if n.fine {
			dir := parentOf(n.path)
			maybe[dir] = true
			// The intent that covers a fine record is its directory's,
			// or that of any ancestor that covers it as a new directory
			// (the model does not know which): all of them.
			for d := dir; ; d = parentOf(d) {
				maybeTree = append(maybeTree, d)
				if d == "" {
					break
				}
			}
			for _, c := range children(dir) {
				maybe[c] = true
			}
			if n.removal {
				maybeDir[dir] = true
				if n.rename {
					dir2 := parentOf(n.path2)
					maybe[dir2] = true
					for _, c := range children(dir2) {
						maybe[c] = true
					}
				}
			}
		}
	}
	underTree := func(p string) bool {
		return slices.ContainsFunc(maybeTree, func(d string) bool { return d == "" || isBeneath(p, d) })
	}
	for p, e := range listed {
		if e.Inflight && !maybe[p] && !maybeDir[parentOf(p)] && !underTree(p) {
			w.fail(failInflight, "query %d: %q reported inflight, but nothing was in flight on it at a crash", P, p)
		}
	}
}
