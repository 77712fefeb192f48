package checkpoint

import (
	"slices"
)

// The model of model_test.go: crashes, restarts and the quiet final
// rounds.

// crash kills the tracker (powerCut: the machine) between two steps.
func (w *mworld) crash(powerCut bool) {
	w.crashes++
	if powerCut && ((w.coarse() && !w.cfg.coarsePowerCutAfterLoss && (w.lossSinceBless || w.store.isLost())) ||
		(!w.cfg.powerCutAfterRename && w.renameSinceBless)) {
		w.logf("(a power cut here would hit a known bug: a kill instead)")
		powerCut = false
	}
	if !powerCut {
		w.lossSinceBless = true
	}
	what := "kill"
	if powerCut {
		what = "power cut"
		w.powerCutSeen = true
	}
	// What was in flight may or may not have reached BACKING.
	for _, m := range w.mods {
		if !m.applied && w.ch.choose(2) == 1 {
			w.logf("%s: #%d %s reached BACKING", what, m.id, m.desc)
			w.stepApply(m)
		}
	}
	for _, mh := range slices.Clone(w.handles) {
		if mh.touched && w.ch.choose(2) == 1 {
			w.logf("%s: the write of #%d reached BACKING", what, mh.id)
			w.stepHandleWrite(mh)
		}
		if !mh.opened && w.ch.choose(2) == 1 {
			w.logf("%s: the open of #%d reached BACKING", what, mh.id)
			w.stepOpenApply(mh)
		}
	}
	for _, m := range w.mods {
		n := m.name
		n.busy = true
		w.crashInflight = append(w.crashInflight, n)
	}
	for _, mh := range w.handles {
		for _, n := range mh.recs {
			n.busy = true
			w.crashInflight = append(w.crashInflight, n)
		}
	}
	w.crashInflight = append(w.crashInflight, w.pendingDone...)
	w.pendingDone = nil
	oldTr := w.tr
	before := w.back.copyTree()
	oldStore := w.store
	w.store = oldStore.crash(powerCut)
	var kept, dropped int
	w.back = w.back.crash(powerCut, func(i int, op bop) bool {
		if w.ch.choose(2) == 1 {
			kept++
			return true
		}
		dropped++
		return false
	})
	w.noteChanges(before, w.back.copyTree())
	// The dead tracker's goroutines: end what it had in flight so that a
	// blocked query returns (it fails on the dead store).
	for _, m := range w.mods {
		m.tok.End()
	}
	if w.adv != nil {
		r := <-w.adv.done
		if r.err == nil && w.adv.query {
			w.fail(failAPI, "a query of a crashed tracker succeeded")
		}
		w.adv = nil
	}
	for _, p := range oldStore.problems() {
		w.fail(failStore, "%s", p)
	}
	w.mods = nil
	w.handles = nil
	w.cons = mconsumer{state: "idle"}
	w.named.cons = mconsumer{state: "idle"}
	oldTr.comp.stop() // its completions fail on the dead store
	prevCurrent := w.store.durableState().Current
	oldRun := w.run
	if err := w.mount(); err != nil {
		w.fail(failAPI, "New after %s: %v", what, err)
		panic("model: cannot continue")
	}
	tr := w.tr
	if w.lastUnclean != oldRun {
		w.fail(failAPI, "after the crash of run %d, State.LastUncleanRun = %d", oldRun, w.lastUnclean)
	}
	w.recovered = true
	w.recoveredAt = tr.Current()
	if tr.Current() != prevCurrent+1 {
		w.fail(failAPI, "recovery started period %d, want %d", tr.Current(), prevCurrent+1)
	}
	if st, _, err := tr.Status(); err != nil || !st.Recovered {
		w.fail(failAPI, "Status after %s: recovered=%v err=%v", what, st.Recovered, err)
	}
	w.logf("%s: BACKING kept %d and lost %d unsynced operation(s); new mount, period %d", what, kept, dropped, tr.Current())
}

// stepRestart unmounts cleanly and mounts again.
func (w *mworld) stepRestart() {
	for _, mh := range slices.Clone(w.handles) {
		if mh.touched {
			w.stepHandleWrite(mh)
		}
		w.releaseHandle(mh)
	}
	cur := w.tr.Current()
	oldRun := w.run
	closeErr := w.tr.Close()
	if closeErr != nil && !injectedErr(closeErr) {
		w.fail(failAPI, "Close: %v", closeErr)
		return
	}
	w.pendingDone = nil // Close recorded them
	// A new process opens the journal again: Lost() starts false.
	w.store.mu.Lock()
	w.store.lost = false
	w.store.mu.Unlock()
	if err := w.mount(); err != nil {
		w.fail(failAPI, "New after Close: %v", err)
		panic("model: cannot continue")
	}
	tr := w.tr
	if closeErr != nil {
		// The journal could not be marked clean: the next mount recovers.
		w.logf("Close failed (%v): restart, recovering in period %d", closeErr, tr.Current())
		if tr.Current() != cur+1 || w.lastUnclean != oldRun {
			w.fail(failAPI, "mount after a failed Close: period %d (want %d), LastUncleanRun %d (want %d)",
				tr.Current(), cur+1, w.lastUnclean, oldRun)
		}
		w.recovered = true
		w.recoveredAt = tr.Current()
		w.lossSinceBless = true
		w.cons = mconsumer{state: "idle"} // as after a crash: query again
		w.named.cons = mconsumer{state: "idle"}
		return
	}
	if tr.Current() != cur {
		w.fail(failAPI, "a clean restart moved the period from %d to %d", cur, tr.Current())
	}
	w.logf("clean restart (period %d)", cur)
}

// settle ends the schedule: it finishes everything in flight, clears the
// faults and runs quiet consumer rounds; then DEST must equal BACKING.
func (w *mworld) settle() {
	w.logf("-- settle")
	w.quiet = true
	for len(w.mods) > 0 {
		m := w.mods[0]
		if !m.applied {
			w.stepApply(m)
		}
		w.stepEnd(m)
	}
	for _, mh := range slices.Clone(w.handles) {
		if !mh.opened {
			w.stepOpenApply(mh)
		}
		if mh.touched {
			w.stepHandleWrite(mh)
		}
	}
	for _, mh := range slices.Clone(w.handles) {
		w.releaseHandle(mh)
	}
	w.store.mu.Lock()
	w.store.appendErrs, w.store.saveErrs = nil, nil
	w.store.mu.Unlock()
	w.back.mu.Lock()
	w.back.syncErrs = nil
	w.back.mu.Unlock()
	if w.cons.state == "copying" {
		for len(w.cons.toCopy) > 0 {
			w.stepCopy()
		}
		w.stepBless()
	}
	for round := 0; round < 2; round++ {
		w.stepQuery()
		if w.cons.state != "copying" {
			w.fail(failAPI, "settle: the query failed")
			return
		}
		for len(w.cons.toCopy) > 0 {
			w.stepCopy()
		}
		w.stepBless()
	}
	// Nothing changed since the last answer: DEST must be BACKING.
	w.checkDest("at the end", w.evt)
	if w.cfg.named {
		w.settleNamed()
	}
	w.stepCompleter()
	for _, p := range w.store.problems() {
		w.fail(failStore, "%s", p)
	}
	if st, _, err := w.tr.Status(); err != nil || st.InFlight != 0 || st.OpenForWrite != 0 {
		w.fail(failAPI, "settle: status %+v, %v", st, err)
	}
}

// settleNamed runs quiet rounds of the named consumer; then its DEST
// must be BACKING too.
func (w *mworld) settleNamed() {
	n := &w.named
	for round := 0; round < 3; round++ {
		if n.cons.state == "idle" {
			w.startAdvanceFor(true, "b")
			if n.cons.state != "copying" {
				w.fail(failAPI, "settle: the query of consumer b failed")
				return
			}
		}
		for len(n.cons.toCopy) > 0 {
			w.stepNamedCopy()
		}
		w.stepNamedBless()
	}
	w.checkDestOf(n.dest, "consumer b", "at the end", w.evt)
}

func (w *mworld) runSchedule() {
	defer func() {
		if p := recover(); p != nil {
			w.fail(failAPI, "panic: %v", p)
		}
	}()
	for i := 0; i < w.cfg.steps; i++ {
		a := w.pick(w.enabled())
		a.do()
	}
	w.settle()
}
