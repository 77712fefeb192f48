package checkpoint

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The model of model_test.go: the steps a schedule is made of.

// ---------------------------------------------------------------------
// actions

type maction struct {
	name   string
	weight int
	do     func()
}

func (w *mworld) pick(acts []maction) maction {
	if w.ch.exhaustive() {
		return acts[w.ch.choose(len(acts))]
	}
	total := 0
	for _, a := range acts {
		total += a.weight
	}
	n := w.ch.choose(total)
	for _, a := range acts {
		if n < a.weight {
			return a
		}
		n -= a.weight
	}
	panic("unreachable")
}

func (w *mworld) enabled() []maction {
	var acts []maction
	add := func(name string, weight int, do func()) {
		acts = append(acts, maction{name, weight, do})
	}
	add("begin", 12, w.stepBegin)
	for _, m := range w.mods {
		m := m
		if !m.applied {
			add("apply", 6, func() { w.stepApply(m) })
		} else {
			add("end", 6, func() { w.stepEnd(m) })
		}
	}
	if w.cfg.handles {
		if len(w.handles) < 3 {
			add("open", 3, w.stepOpen)
		}
		for _, mh := range w.handles {
			mh := mh
			switch {
			case !mh.opened:
				add("open2", 4, func() { w.stepOpenApply(mh) })
			case mh.touched:
				add("hwrite", 4, func() { w.stepHandleWrite(mh) })
			default:
				add("touch", 3, func() { w.stepTouch(mh) })
				add("mmapwrite", 2, func() { w.stepMmapWrite(mh) })
				add("release", 2, func() { w.stepRelease(mh) })
			}
		}
	}
	if w.adv == nil {
		switch w.cons.state {
		case "idle":
			add("query", 6, w.stepQuery)
		case "copying":
			if len(w.cons.toCopy) == 0 {
				add("bless", 6, w.stepBless)
			}
		}
		if w.cfg.named {
			switch {
			case w.named.cons.state == "idle":
				add("query2", 3, func() { w.startAdvanceFor(true, "b") })
			case len(w.named.cons.toCopy) == 0:
				add("bless2", 3, w.stepNamedBless)
			}
		}
		if w.cfg.checkpoints {
			add("checkpoint", 1, w.stepCheckpoint)
		}
		if w.cfg.restarts && len(w.mods) == 0 && (w.cfg.restartAfterLost || !w.store.isLost()) {
			add("restart", 1, w.stepRestart)
		}
	}
	if w.cons.state == "copying" && len(w.cons.toCopy) > 0 {
		add("copy", 8, w.stepCopy)
	}
	if w.named.cons.state == "copying" && len(w.named.cons.toCopy) > 0 {
		add("copy2", 5, w.stepNamedCopy)
	}
	add("completer", 3, w.stepCompleter)
	if w.coarse() {
		add("committer", 2, w.stepCommitter)
	}
	if w.cfg.faults {
		add("fault", 2, w.stepFault)
	}
	if w.cfg.kills {
		add("kill", 1, func() { w.crash(false) })
	}
	if w.cfg.powerCuts {
		add("powercut", 1, func() { w.crash(true) })
	}
	return acts
}

func (w *mworld) stepBegin() {
	kinds := []string{"write", "write", "chmod", "unlink", "rename"}
	if w.cfg.dirs {
		kinds = append(kinds, "mkdir", "mkdir", "rmdir")
	}
	kind := kinds[w.ch.choose(len(kinds))]
	var in Intent
	var op bop
	switch kind {
	case "write":
		p := w.pickPath()
		in, op = Intent{Op: OpWrite, Path: p}, bop{kind: "write", path: p}
		if n, ok := w.back.get(p); ok {
			op.ino = n.ino
		} else {
			op.ino = w.allocIno()
			in.Op = OpCreate
		}
	case "chmod":
		p := w.pickPath()
		in, op = Intent{Op: OpChmod, Path: p}, bop{kind: "chmod", path: p}
	case "unlink":
		p := w.pickPath()
		in, op = Intent{Op: OpUnlink, Path: p}, bop{kind: "unlink", path: p}
	case "mkdir":
		p := w.pickDir()
		if _, ok := w.back.get(p); ok {
			// As the kernel: EEXIST without a request (fs refuses
			// it before the record too, oldnames.go relies on it).
			w.logf("mkdir %s: exists: skipped", p)
			return
		}
		in, op = Intent{Op: OpMkdir, Flags: FlagDir, Path: p}, bop{kind: "mkdir", path: p, ino: w.allocIno()}
	case "rmdir":
		p := w.pickDir()
		in, op = Intent{Op: OpRmdir, Flags: FlagDir, Path: p}, bop{kind: "rmdir", path: p}
	case "rename":
		ps := w.allPaths()
		i := w.ch.choose(len(ps))
		j := w.ch.choose(len(ps) - 1)
		if j >= i {
			j++
		}
		src, dst := ps[i], ps[j]
		in, op = Intent{Op: OpRename, Path: src, Path2: dst}, bop{kind: "rename", path: src, path2: dst}
		// As fs.Node.Rename: lstat, then Begin, then rename(2).
		if n, ok := w.back.get(src); ok {
			in.Ino = n.ino
			if n.typ == typDir {
				if !w.cfg.dirRenames {
					w.logf("begin rename %s %s: a directory, and directory renames are off: skipped", src, dst)
					return
				}
				in.Flags |= FlagDir
			}
		}
	}
	in, op = w.back.withDirs(in, op)
	period := w.tr.Current()
	tok, err := w.tr.Begin(in)
	desc := fmt.Sprintf("%s %s", in.Op, in.Path)
	if in.Path2 != "" {
		desc += " " + in.Path2
	}
	if in.Flags&FlagDir != 0 {
		desc += " (dir)"
	}
	if err != nil {
		w.logf("begin %s: %v", desc, err)
		if !injectedErr(err) {
			w.fail(failAPI, "Begin %s failed with an error the model did not inject: %v", desc, err)
		}
		return
	}
	w.nextID++
	m := &mmod{id: w.nextID, desc: desc, in: in, op: op, period: period, tok: tok}
	w.mods = append(w.mods, m)
	m.name = w.name(period, in.Op, in.Path, in.Path2, in.Op == OpRename && in.Flags&FlagDir != 0)
	if in.Op == OpRename {
		w.renameSinceBless = true
	}
	w.recorded = append(w.recorded, m.name)
	w.logf("begin #%d %s in period %d", m.id, desc, period)
}

func (w *mworld) allocIno() uint64 {
	w.back.mu.Lock()
	defer w.back.mu.Unlock()
	ino := w.back.nextIno
	w.back.nextIno++
	return ino
}

func (w *mworld) stepApply(m *mmod) {
	m.applied = true
	op := m.op
	if op.kind == "rename" && !w.cfg.dirRenames {
		if n, ok := w.back.get(op.path); ok && n.typ == typDir {
			w.logf("apply #%d %s: source became a directory; directory renames are off: EXDEV", m.id, m.desc)
			return
		}
	}
	if op.kind == "rename" && !w.cfg.renameOpenFileAcross {
		for _, mh := range w.handles {
			if p, ok := mh.pathFn(); ok && mh.hperiod > m.period && (p == op.path || isBeneath(p, op.path)) {
				w.logf("apply #%d %s: would move open file #%d across periods (known bug): fails", m.id, m.desc, mh.id)
				return
			}
		}
	}
	if op.kind == "write" {
		if n, ok := w.back.get(op.path); ok {
			op.ino = n.ino
		} else {
			op.ino = w.allocIno() // a new file: never another file's inode
		}
	}
	before := w.back.copyTree()
	changed := w.back.apply(op)
	w.noteChanges(before, w.back.copyTree())
	w.logf("apply #%d %s: changed=%v", m.id, m.desc, changed)
}

func (w *mworld) removeMod(m *mmod) {
	w.mods = slices.DeleteFunc(w.mods, func(o *mmod) bool { return o == m })
}

func (w *mworld) stepEnd(m *mmod) {
	if w.adv != nil && w.adv.waitFor[m.id] && len(w.adv.waitFor) == 1 {
		// This End lets the query re-record the open files: only an
		// Append failure from now on is the re-record's.
		_, w.adv.failedBefore = w.store.counts()
	}
	m.tok.End()
	w.removeMod(m)
	w.pendingDone = append(w.pendingDone, m.name)
	w.logf("end #%d %s", m.id, m.desc)
	if w.adv != nil && w.adv.waitFor[m.id] {
		delete(w.adv.waitFor, m.id)
		if len(w.adv.waitFor) == 0 {
			r := <-w.adv.done
			w.finishAdvance(w.adv, r)
		}
	}
}

func (w *mworld) stepOpen() {
	p := w.pickPath()
	w.nextID++
	mh := &mhandle{id: w.nextID, path0: p, pathFnBack: w.back}
	var extra []Op
	if n, ok := w.back.get(p); ok {
		if n.typ != typFile {
			w.logf("open %s: not a regular file: skipped", p)
			return
		}
		mh.ino.Store(n.ino)
		if w.ch.choose(3) == 0 {
			mh.truncate = true
			extra = append(extra, OpTruncate)
		}
	} else {
		mh.createIno = w.allocIno()
		extra = append(extra, OpCreate)
	}
	cur := w.tr.Current()
	h, err := w.tr.OpenWrite(mh.pathFn, mh.ino.Load(), extra...)
	if err != nil {
		w.logf("open #%d %s: %v", mh.id, p, err)
		if !injectedErr(err) {
			w.fail(failAPI, "OpenWrite %s failed with an error the model did not inject: %v", p, err)
		}
		return
	}
	mh.h = h
	mh.hperiod = cur
	if path, ok := mh.pathFn(); ok {
		n := w.name(cur, OpWrite, path, "", false)
		mh.recs = append(mh.recs, n)
		w.recorded = append(w.recorded, n)
	}
	w.handles = append(w.handles, mh)
	w.logf("open #%d %s (create=%v trunc=%v) in period %d", mh.id, p, mh.createIno != 0, mh.truncate, cur)
}

// stepOpenApply is the open(2) (or creat(2)) that follows OpenWrite.
func (w *mworld) stepOpenApply(mh *mhandle) {
	mh.opened = true
	if mh.createIno != 0 {
		if n, ok := w.back.get(mh.path0); ok {
			if n.typ != typFile {
				w.logf("open2 #%d %s: EISDIR: released", mh.id, mh.path0)
				w.releaseHandle(mh)
				return
			}
			mh.ino.Store(n.ino) // O_CREAT of an existing file opens it
			w.logf("open2 #%d %s: exists, opened", mh.id, mh.path0)
			return
		}
		w.applyBacking(bop{kind: "write", path: mh.path0, ino: mh.createIno})
		if _, ok := w.back.get(mh.path0); !ok {
			w.logf("open2 #%d %s: ENOENT (no parent): released", mh.id, mh.path0)
			w.releaseHandle(mh)
			return
		}
		mh.ino.Store(mh.createIno)
		w.logf("open2 #%d created %s", mh.id, mh.path0)
		return
	}
	if _, ok := w.back.pathOfIno(mh.ino.Load()); !ok {
		w.logf("open2 #%d: file gone: ENOENT, released", mh.id)
		w.releaseHandle(mh)
		return
	}
	if mh.truncate {
		w.applyBacking(bop{kind: "writeino", ino: mh.ino.Load()})
	}
	w.logf("open2 #%d opened (trunc=%v)", mh.id, mh.truncate)
}

func (w *mworld) releaseHandle(mh *mhandle) {
	w.pendingDone = append(w.pendingDone, mh.recs...)
	mh.h.Release()
	w.handles = slices.DeleteFunc(w.handles, func(o *mhandle) bool { return o == mh })
}

func (w *mworld) stepTouch(mh *mhandle) {
	cur := w.tr.Current()
	err := mh.h.Touch()
	if err != nil {
		w.logf("touch #%d: %v", mh.id, err)
		if !injectedErr(err) {
			w.fail(failAPI, "Touch failed with an error the model did not inject: %v", err)
		}
		return
	}
	if mh.hperiod != cur {
		if path, ok := mh.pathFn(); ok {
			n := w.name(cur, OpWrite, path, "", false)
			mh.recs = append(mh.recs, n)
			w.recorded = append(w.recorded, n)
		}
		mh.hperiod = cur
	}
	mh.touched = true
	w.logf("touch #%d (period %d)", mh.id, cur)
}

func (w *mworld) stepHandleWrite(mh *mhandle) {
	mh.touched = false
	w.applyBacking(bop{kind: "writeino", ino: mh.ino.Load()})
	p, ok := mh.pathFn()
	w.logf("hwrite #%d -> %q (named=%v)", mh.id, p, ok)
}

func (w *mworld) stepMmapWrite(mh *mhandle) {
	w.applyBacking(bop{kind: "writeino", ino: mh.ino.Load()})
	p, ok := mh.pathFn()
	w.logf("mmapwrite #%d -> %q (named=%v), no Touch", mh.id, p, ok)
}

func (w *mworld) stepRelease(mh *mhandle) {
	w.releaseHandle(mh)
	w.logf("release #%d", mh.id)
}

// stepCompleter: the completer's delay elapsed; it records the
// completions of the idle intents.
func (w *mworld) stepCompleter() {
	n := pendingCompletions(w.tr)
	w.tr.comp.flush()
	w.pendingDone = nil
	w.logf("completer: %d completion(s) recorded", n)
}

// stepCommitter: the journal's committer writes the queued fine records
// on its own, without a sync.
func (w *mworld) stepCommitter() {
	n := w.store.queued()
	w.store.writeAsync()
	w.logf("committer: %d queued fine record(s) written, unsynced", n)
}

func (w *mworld) stepFault() {
	n := 4
	if w.coarse() && w.cfg.asyncFaults {
		n = 5
	}
	switch w.ch.choose(n) {
	case 4:
		w.store.failNextAsyncWrite(syscall.EIO)
		w.logf("fault: the next unsynced write of queued fine records fails with EIO")
		w.queuedLossInjected = true
	case 0:
		w.store.failNextAppend(syscall.EIO)
		w.logf("fault: next Append fails with EIO")
	case 1:
		w.store.failNextAppend(syscall.ENOSPC)
		w.logf("fault: next Append fails with ENOSPC")
	case 2:
		w.store.failNextSaveState(syscall.EIO)
		w.logf("fault: next SaveState fails with EIO")
	case 3:
		w.back.failNextSyncfs(syscall.EIO)
		w.logf("fault: next Syncfs fails with EIO")
	}
}

// startAdvance runs Query or Checkpoint in a goroutine and returns once
// it has returned, or once it is certainly blocked draining the
// modifications in flight.
func (w *mworld) startAdvance(query bool) { w.startAdvanceFor(query, "") }

func (w *mworld) startAdvanceFor(query bool, consumer string) {
	P := w.tr.Current() + 1
	_, failed := w.store.counts()
	a := &madvance{query: query, consumer: consumer, P: P, done: make(chan advResult, 1), waitFor: make(map[int]bool), failedBefore: failed}
	for _, m := range w.mods {
		a.waitFor[m.id] = true
	}
	if st, _, err := w.tr.Status(); err == nil && st.InFlight != int64(len(w.mods)) {
		w.fail(failAPI, "Status().InFlight = %d, the model has %d modifications in flight", st.InFlight, len(w.mods))
	}
	tr := w.tr
	go func() {
		if query {
			ans, err := tr.QueryWith(QueryOptions{Consumer: consumer, PathsOnly: w.cfg.pathsOnly})
			a.done <- advResult{ans: ans, err: err}
		} else {
			id, err := tr.Checkpoint()
			a.done <- advResult{id: id, err: err}
		}
	}()
	what := "checkpoint"
	if query {
		what = "query"
	}
	if len(a.waitFor) == 0 {
		w.logf("%s %d (nothing in flight)", what, P)
		w.finishAdvance(a, <-a.done)
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case r := <-a.done:
			w.logf("%s %d returned at once", what, P)
			w.finishAdvance(a, r)
			return
		default:
		}
		if tr.Current() == P {
			break
		}
		if time.Now().After(deadline) {
			panic("model: query neither switched the period nor returned in 10s")
		}
		runtime.Gosched()
	}
	w.adv = a
	w.logf("%s %d started, blocked on %d modification(s) in flight", what, P, len(a.waitFor))
}

func (w *mworld) finishAdvance(a *madvance, r advResult) {
	w.adv = nil
	swapped := w.tr.Current() >= a.P
	_, failed := w.store.counts()
	if swapped && failed == a.failedBefore {
		// The open files were re-recorded in P (mirror of rerecordHandles).
		for _, mh := range w.handles {
			if mh.hperiod < a.P {
				if path, ok := mh.pathFn(); ok {
					n := w.name(a.P, OpWrite, path, "", false)
					mh.recs = append(mh.recs, n)
					w.recorded = append(w.recorded, n)
					mh.hperiod = a.P
				}
			}
		}
	}
	if !a.query {
		if r.err != nil {
			w.logf("checkpoint %d: %v", a.P, r.err)
			if !injectedErr(r.err) {
				w.fail(failAPI, "Checkpoint failed with an error the model did not inject: %v", r.err)
			}
			return
		}
		if r.id != a.P {
			w.fail(failAPI, "Checkpoint returned %d, want %d", r.id, a.P)
		}
		w.logf("checkpoint %d done", r.id)
		return
	}
	if r.err != nil {
		w.logf("query %d: %v", a.P, r.err)
		if !injectedErr(r.err) && !errors.Is(r.err, errDeadStore) {
			w.fail(failAPI, "Query failed with an error the model did not inject: %v", r.err)
		}
		return
	}
	if a.consumer != "" {
		w.namedAnswered(r.ans)
		return
	}
	w.queries++
	w.lastQuery = r.ans.Query
	w.logf("query %d answered: %s", r.ans.Query, answerSummary(r.ans))
	w.checkAnswer(a.P, r.ans)
	w.evt++
	w.cons = mconsumer{state: "copying", ans: r.ans, answerEvt: w.evt}
	// The consumer feeds the plain answer to rsync.
	w.cons.toCopy = plainPaths(r.ans)
	if w.cfg.copyShadowed {
		w.cons.toCopy = paths(r.ans)
	}
}

// namedAnswered starts the named consumer's copy: the whole tree at once
// when the answer says full (rsync -a -I --delete), else the answer.
func (w *mworld) namedAnswered(a *Answer) {
	w.logf("query %d (consumer b) answered: full=%v %s", a.Query, a.Full, answerSummary(a))
	for i := 1; i < len(a.Entries); i++ {
		if a.Entries[i-1].Path >= a.Entries[i].Path {
			w.fail(failAnswer, "consumer b: answer not sorted/unique at %q, %q", a.Entries[i-1].Path, a.Entries[i].Path)
		}
	}
	w.evt++
	n := &w.named
	n.queryCrash = w.crashes
	n.cons = mconsumer{state: "copying", ans: a, answerEvt: w.evt, toCopy: plainPaths(a)}
	if a.Full {
		n.dest = w.back.copyTree()
		n.cons.toCopy = nil
	}
}

func (w *mworld) stepNamedCopy() {
	n := &w.named
	k := len(n.cons.toCopy)
	if !w.quiet {
		k = 1 + w.ch.choose(len(n.cons.toCopy))
	}
	for _, p := range n.cons.toCopy[:k] {
		rsyncCopy(n.dest, w.back, p)
	}
	w.logf("copy (consumer b) %v", n.cons.toCopy[:k])
	n.cons.toCopy = n.cons.toCopy[k:]
}

func (w *mworld) stepNamedBless() {
	n := &w.named
	id := n.cons.ans.Query
	stale := w.crashes > n.queryCrash
	if n.cons.ans.Full {
		// A bless that does not say full is refused, and changes nothing.
		_, err := w.tr.BlessFor("b", id)
		if !errors.Is(err, ErrFullCopy) && !(stale && errors.Is(err, ErrUnknownQuery)) {
			w.fail(failAPI, "BlessFor(b, %d) of a full answer without full: %v, want ErrFullCopy", id, err)
		}
	}
	_, err := w.tr.BlessWith(Blessing{Consumer: "b", ID: id, Full: n.cons.ans.Full})
	if err != nil {
		w.logf("bless %d (consumer b): %v", id, err)
		if !injectedErr(err) && !(stale && errors.Is(err, ErrUnknownQuery)) {
			w.fail(failAPI, "BlessFor(b, %d) failed with an error the model did not inject: %v", id, err)
		}
		n.cons = mconsumer{state: "idle"}
		return
	}
	w.logf("bless %d (consumer b) done", id)
	w.checkDestOf(n.dest, "consumer b", fmt.Sprintf("after its bless %d", id), n.cons.answerEvt)
	n.cons = mconsumer{state: "idle"}
}

func answerSummary(a *Answer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "blessed=%d recovered=%v [", a.Blessed, a.Recovered)
	for i, e := range a.Entries {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.Path)
		if e.Inflight {
			b.WriteString("(inflight)")
		}
	}
	b.WriteByte(']')
	return b.String()
}

func (w *mworld) stepQuery()      { w.startAdvance(true) }
func (w *mworld) stepCheckpoint() { w.startAdvance(false) }

// pickDir picks where a mkdir or rmdir goes: mostly a top, sometimes a
// child, so that renamed directories hold directories (old names deeper
// than one level).
func (w *mworld) pickDir() string {
	if w.cfg.nestedDirs && w.ch.choose(3) == 0 {
		return w.pickPath()
	}
	return w.cfg.tops[w.ch.choose(len(w.cfg.tops))]
}
