package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The protocol checked on its own: a deterministic, seeded exploration of
// interleavings of writers, files open for writing, queries, checkpoints,
// blesses, injected journal and syncfs errors, and crashes (process kill
// and power cut), against a model consumer that loops
//
//	query -> copy every listed path from BACKING into DEST -> bless
//
// exactly as the contract's rsync command would. The invariant (Jan
// Kara's: "if file F was modified during period T, F is reported in T or
// a later period until a bless covers it") is checked in its consumer
// form: when a bless of query Q completes, every path on which DEST and
// BACKING differ must have changed (itself or an ancestor) after Q's
// answer was returned; and at the end of every schedule, after quiet
// final rounds, DEST == BACKING exactly.
//
// Determinism: the tracker's only blocking point is a query (or
// checkpoint) draining the earlier periods. The model knows exactly which
// modifications are in flight, so it runs Query in a goroutine, waits
// until it has either returned or switched the period (then it is
// certainly blocked on the in-flight modifications the model knows of),
// lets the scheduler go on (new modifications go to the new period), and
// waits for the query to return right after the last of those
// modifications ends. Nothing else runs concurrently with the scheduler,
// so a schedule is a pure function of its seed (or choice sequence). The
// completer (delayed completions) and the journal's committer (which
// writes queued fine records on its own) are steps of the schedule too.
//
// Crashes: a kill keeps every store write that returned and BACKING's
// page cache (still unsynced); a power cut keeps what was synced, and of
// BACKING the state of the last syncfs plus any subset of the later
// operations. A modification between Begin and its operation on BACKING
// is taken both ways (reached BACKING or not), as is a write through an
// open file after Touch. After a crash the tracker is mounted again on
// what survived, and the consumer starts its round again with a query.
//
// Schedules alternate between fine and coarse mode (AsyncStore), stores
// whose syncs do or do not flush earlier unsynced writes, and Backings
// with or without the optional List/LstatSorted.
//
// Tests: TestModel (everything), TestModelExhaustive (every choice
// sequence up to a small depth), TestModelCatches* (mutations that the
// model must catch), TestModelReplayIsDeterministic.
//
// Environment:
//
//	CHECKPOINT_MODEL_SEED       first seed (default 1); schedule i uses seed+i
//	CHECKPOINT_MODEL_SCHEDULES  number of random schedules of TestModel (default 2000)
//	CHECKPOINT_MODEL_STEPS      steps per schedule (default 60)
//	CHECKPOINT_MODEL_DEPTH      bound of the exhaustive exploration (default 3)
//	CHECKPOINT_MODEL_VERBOSE    1: log the trace of every schedule

// ---------------------------------------------------------------------
// choosers

type chooser interface {
	// choose returns a number in [0, n).
	choose(n int) int
	exhaustive() bool
}

type randChooser struct{ r *rand.Rand }

func newRandChooser(seed uint64) *randChooser {
	return &randChooser{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (c *randChooser) choose(n int) int {
	if n <= 1 {
		return 0
	}
	return c.r.IntN(n)
}
func (c *randChooser) exhaustive() bool { return false }

// dfsChooser enumerates every choice sequence (stateless model checking
// by re-execution): run a schedule, then next() moves to the following
// sequence in depth-first order.
type dfsChooser struct {
	prefix []int
	taken  [][2]int // value, n
}

func (c *dfsChooser) choose(n int) int {
	if n <= 1 {
		return 0
	}
	v := 0
	if len(c.taken) < len(c.prefix) {
		v = c.prefix[len(c.taken)]
	}
	c.taken = append(c.taken, [2]int{v, n})
	return v
}
func (c *dfsChooser) exhaustive() bool { return true }

// next prepares the following sequence; false when all were explored.
func (c *dfsChooser) next() bool {
	for i := len(c.taken) - 1; i >= 0; i-- {
		if c.taken[i][0]+1 < c.taken[i][1] {
			c.prefix = c.prefix[:0]
			for _, t := range c.taken[:i] {
				c.prefix = append(c.prefix, t[0])
			}
			c.prefix = append(c.prefix, c.taken[i][0]+1)
			c.taken = c.taken[:0]
			return true
		}
	}
	return false
}

func (c *dfsChooser) sequence() string {
	var b strings.Builder
	for i, t := range c.taken {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(t[0]))
	}
	return b.String()
}

// ---------------------------------------------------------------------
// configuration

type modelCfg struct {
	steps    int
	tops     []string // names at the root
	children []string // names inside a directory at the root (dirs only)
	// dirs enables mkdir, rmdir and paths beneath directories.
	dirs bool
	// dirRenames lets rename move directories. As in fs.Node.Rename, the
	// rename's FlagDir is decided by an lstat made before Begin.
	dirRenames bool
	handles    bool
	faults     bool
	// asyncFaults (coarse mode): unsynced writes of queued fine records
	// fail (see TestQueryLostDuringScan).
	asyncFaults bool
	kills       bool
	powerCuts   bool
	restarts    bool // clean Close + New
	// copyShadowed: the consumer copies every path of the answer, also
	// those that Plain leaves out because an ancestor is not a directory
	// (see TestShadowedPathRecreatedBeforeCopy). rsync fails on such a
	// path while the ancestor is not a directory (the ancestor's copy
	// drops it anyway), and deletes it as missing once it is one again.
	copyShadowed bool
	// coarsePowerCutAfterLoss: in coarse mode, a power cut may follow a
	// kill or lost fine records without a bless in between (see
	// TestCoarseModeExpandedEntryLostByPowerCut); otherwise it becomes a
	// kill.
	coarsePowerCutAfterLoss bool
	// powerCutAfterRename: a power cut may follow a rename without a
	// bless in between (see TestRenamedDirectoryUndoneByPowerCut);
	// otherwise it becomes a kill.
	powerCutAfterRename bool
	// renameOpenFileAcross: a rename begun in a period before the latest
	// record of an open file may move that file (see
	// TestOpenFileRenamedByEarlierPeriodRename); otherwise that rename
	// fails (EXDEV-like, nothing changes).
	renameOpenFileAcross bool
	// restartAfterLost: a clean restart may follow lost fine records
	// (see TestCleanCloseAfterLostFineRecords).
	restartAfterLost bool
	checkpoints      bool

	store memStoreOpts // flushOnSync, and the lieAppend mutation
	// noopSyncfs: MUTATION, Syncfs makes nothing durable.
	noopSyncfs bool
	// mutAllOnRoster: MUTATION, see tuning.mutAllOnRoster.
	mutAllOnRoster bool
	// reRosterAfter: misses before a new roster (coarse mode;
	// the tracker's default is far beyond a schedule's length).
	reRosterAfter int
	// directChecks compares each answer with what the model recorded
	// (completeness, D4, inflight, recovered) besides the consumer
	// invariant. The mutation tests turn it off to show that the consumer
	// invariant alone catches the bug.
	directChecks bool
	// d4Checks: every listed path was touched by a modification of an
	// unblessed period (or derives from one: beneath a renamed
	// directory, an entry of a directory intent after a crash).
	d4Checks bool
	// named: a second, named consumer queries, copies and blesses on
	// its own schedule, into its own DEST (D4 is off with it: its
	// derived paths are listed to the default too).
	named bool
	// inflightChecks: after crashes, what was in flight must be reported
	// inflight=true (and, if no power cut happened, only that).
	inflightChecks bool
	// inflightAfterPowerCut: the soundness half of inflightChecks also
	// after power cuts (see TestPowerCutKeepsJoinedModificationInflight).
	inflightAfterPowerCut bool
	// mixModes: schedule i runs in coarse mode (AsyncStore) if i is odd,
	// with a store whose syncs flush earlier unsynced writes (as badger's
	// log does) if i/2 is odd (coarse mode always flushes), and with a
	// Backing that has the optional List and LstatSorted if i/4 is odd.
	mixModes  bool
	listing   bool
	pathsOnly bool // queries with QueryOptions.PathsOnly
}

func defaultModelCfg() modelCfg {
	return modelCfg{
		steps: 60, tops: []string{"a", "b", "c"}, children: []string{"x"},
		dirs: true, dirRenames: true, handles: true, faults: true, asyncFaults: true, kills: true,
		powerCuts: true, restarts: true, restartAfterLost: true, coarsePowerCutAfterLoss: true,
		powerCutAfterRename: true, renameOpenFileAcross: true, checkpoints: true,
		directChecks: true, d4Checks: true, inflightChecks: true, inflightAfterPowerCut: true, mixModes: true,
	}
}

// forSchedule returns the configuration of schedule i.
func (c modelCfg) forSchedule(i uint64) modelCfg {
	if c.mixModes {
		c.store.async = i%2 == 1
		c.store.flushOnSync = (i/2)%2 == 1
		c.listing = (i/4)%2 == 1
		// Paths-only queries stat only what a plain answer needs
		// (with the listing Backing: its LstatSorted skips the rest).
		c.pathsOnly = (i/8)%2 == 1
	}
	if c.store.async {
		// The tracker relies on a sync making earlier unsynced writes
		// (fine records written by a Scan) durable, as badger's log does.
		c.store.flushOnSync = true
		// New rosters after 0, 1 or 2 misses.
		c.reRosterAfter = int(i/8) % 3
	}
	return c
}

func (c modelCfg) mode() string {
	m := "fine"
	if c.store.async {
		m = "coarse"
	}
	if c.store.flushOnSync {
		m += "+flush"
	}
	if c.listing {
		m += "+listing"
	}
	if c.pathsOnly {
		m += "+pathsonly"
	}
	if c.store.async {
		m += fmt.Sprintf("+resnap%d", c.reRosterAfter)
	}
	return m
}

// ---------------------------------------------------------------------
// the world of one schedule

type failKind string

const (
	failDest     failKind = "dest"     // the consumer invariant (DEST vs BACKING)
	failAnswer   failKind = "answer"   // an answer differs from what the model recorded
	failInflight failKind = "inflight" // inflight flags after a crash
	failAPI      failKind = "api"      // an unexpected error or result of a tracker call
	failStore    failKind = "store"    // the tracker broke a rule of the Store interface
)

type mfail struct {
	kind failKind
	msg  string
}

// mname is one name that the model knows to be recorded in a period.
type mname struct {
	period    uint64
	run       uint64
	path      string
	dirRename bool // a rename recorded with FlagDir: expand beneath the names
	rename    bool
	path2     string
	fine      bool // coarse mode: an unsynced fine record under a directory intent on parentDir(path)
	// removal (with fine): the fine record may be covered by a names
	// roster of parentDir(path) instead, which lists path whatever
	// happens; a rename's new name is under a directory intent on
	// parentDir(path2).
	removal bool
	busy    bool // crashInflight: its modification was in flight (not just awaiting its completion)
}

type mmod struct {
	name    mname
	id      int
	desc    string
	in      Intent
	op      bop
	period  uint64
	tok     Token
	applied bool
}

type mhandle struct {
	id         int
	h          *Handle
	ino        atomic.Uint64 // 0 until the file exists
	path0      string        // its name until it exists
	createIno  uint64        // inode to create, or 0 if it existed
	truncate   bool
	opened     bool // the open(2) after OpenWrite has happened
	touched    bool // Touch returned, the write has not happened yet
	hperiod    uint64
	recs       []mname
	pathFnBack *memBacking
}

func (mh *mhandle) pathFn() (string, bool) {
	if ino := mh.ino.Load(); ino != 0 {
		return mh.pathFnBack.pathOfIno(ino)
	}
	return mh.path0, true
}

type advResult struct {
	ans *Answer
	id  uint64
	err error
}

// madvance is a query or checkpoint blocked on in-flight modifications.
type madvance struct {
	query        bool
	consumer     string // the named consumer whose query this is ("" the default)
	P            uint64
	done         chan advResult
	waitFor      map[int]bool // ids of the modifications it drains
	failedBefore int
}

// mnamed is the model's named consumer: only the DEST invariant is
// checked for it (its answers' direct checks are the default's).
type mnamed struct {
	cons       mconsumer
	dest       map[string]bnode
	queryCrash int // crashes before its query: a bless after a crash may be refused
}

type mconsumer struct {
	state     string // idle, copying
	ans       *Answer
	toCopy    []string
	answerEvt uint64
}

type mworld struct {
	// shadowedIn: the paths that answers of the default consumer listed
	// as shadowed, with the latest such answer's id. Their shadow
	// records (period = that id) keep them listed while the cursor has
	// not passed it (docs/design.md, query step 7).
	shadowedIn map[string]uint64

	cfg   modelCfg
	ch    chooser
	trace []string
	fails []mfail

	events *eventLog
	store  *memStore
	back   *memBacking
	tr     *Tracker

	mods    []*mmod
	handles []*mhandle
	nextID  int
	adv     *madvance
	cons    mconsumer
	dest    map[string]bnode
	// named is a second consumer, named, with its own schedule and DEST
	// (cfg.named).
	named mnamed

	lastChange map[string]uint64
	evt        uint64

	quiet            bool // settle: no more choices
	recorded         []mname
	crashInflight    []mname // in flight (or idle, completion not yet recorded) at a crash
	pendingDone      []mname // ended since the completer last ran
	powerCutSeen     bool
	lossSinceBless   bool // a kill or lost fine records since the last completed bless
	renameSinceBless bool // a rename was recorded since the last completed bless
	run              uint64
	lastUnclean      uint64
	recovered        bool
	recoveredAt      uint64
	blessed          uint64
	lastQuery        uint64
	queries          int
	blesses          int
	crashes          int
	// queuedLossInjected: a write of queued fine records was made to
	// fail; from then on the tracker answers directories whole, as
	// after a crash, so D4 is not checked.
	queuedLossInjected bool
}

func newWorld(cfg modelCfg, ch chooser) (*mworld, error) {
	w := &mworld{cfg: cfg, ch: ch, dest: make(map[string]bnode), lastChange: make(map[string]uint64)}
	w.store = newMemStore(cfg.store, w.events)
	w.back = newMemBacking(w.events)
	w.back.noopSyncfs = cfg.noopSyncfs
	if err := w.mount(); err != nil {
		return nil, err
	}
	w.cons.state = "idle"
	w.named = mnamed{cons: mconsumer{state: "idle"}, dest: make(map[string]bnode)}
	if cfg.named {
		if err := w.tr.AddConsumer("b"); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// mount starts a tracker on the current store and backing, with
// completions recorded only when the model runs the completer.
func (w *mworld) mount() error {
	var back Backing = w.back
	if w.cfg.listing {
		back = listingBacking{w.back}
	}
	tr, err := New(w.store.store(), back, nil)
	for i := 0; i < 3 && err != nil && injectedErr(err); i++ {
		// The mount failed on an injected fault; the admin mounts again.
		w.logf("mount: %v (mounting again)", err)
		tr, err = New(w.store.store(), back, nil)
	}
	if err != nil {
		return err
	}
	manualCompletions(tr)
	tr.tune.mutAllOnRoster = w.cfg.mutAllOnRoster
	tr.tune.reRosterAfter = w.cfg.reRosterAfter
	w.tr = tr
	st := w.store.durableState()
	w.run = st.Run
	w.lastUnclean = st.LastUncleanRun
	return nil
}

func (w *mworld) coarse() bool { return w.cfg.store.async }

// name is the model's record of a name recorded now.
func (w *mworld) name(period uint64, op Op, path, path2 string, dirRename bool) mname {
	var fl uint8
	if dirRename {
		fl = FlagDir
	}
	removal := rosterRemoval(Intent{Op: op, Flags: fl, Path: path, Path2: path2})
	return mname{period: period, run: w.run, path: path, path2: path2, dirRename: dirRename, rename: op == OpRename,
		fine: w.coarse() && path != "" && (coarseOp(op) || removal), removal: removal}
}

func (w *mworld) logf(format string, a ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%3d ", len(w.trace))+fmt.Sprintf(format, a...))
}

func (w *mworld) fail(kind failKind, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	w.fails = append(w.fails, mfail{kind, msg})
	w.logf("!! FAIL (%s): %s", kind, msg)
}

func (w *mworld) failed(kinds ...failKind) bool {
	for _, f := range w.fails {
		if len(kinds) == 0 || slices.Contains(kinds, f.kind) {
			return true
		}
	}
	return false
}

func (w *mworld) allPaths() []string {
	ps := slices.Clone(w.cfg.tops)
	if w.cfg.dirs {
		for _, t := range w.cfg.tops {
			for _, c := range w.cfg.children {
				ps = append(ps, t+"/"+c)
			}
		}
	}
	return ps
}

func (w *mworld) pickPath() string {
	ps := w.allPaths()
	return ps[w.ch.choose(len(ps))]
}

// noteChanges records, for every path whose value differs between two
// trees, that it changed now.
func (w *mworld) noteChanges(before, after map[string]bnode) {
	w.evt++
	for p, n := range before {
		if m, ok := after[p]; !ok || m.typ != n.typ || m.ver != n.ver {
			w.lastChange[p] = w.evt
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			w.lastChange[p] = w.evt
		}
	}
}

func (w *mworld) applyBacking(op bop) {
	before := w.back.copyTree()
	w.back.apply(op)
	w.noteChanges(before, w.back.copyTree())
}

// injectedErr reports whether err is one of the errors the model injects
// (or the dead store of a crashed tracker).
func injectedErr(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ENOSPC)
}

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
		p := w.cfg.tops[w.ch.choose(len(w.cfg.tops))]
		in, op = Intent{Op: OpMkdir, Flags: FlagDir, Path: p}, bop{kind: "mkdir", path: p, ino: w.allocIno()}
	case "rmdir":
		p := w.cfg.tops[w.ch.choose(len(w.cfg.tops))]
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
	if st, err := w.tr.Status(); err == nil && st.InFlight != int64(len(w.mods)) {
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
	_, err := w.tr.BlessFor("b", id)
	if err != nil {
		w.logf("bless %d (consumer b): %v", id, err)
		stale := w.crashes > n.queryCrash && errors.Is(err, ErrUnknownQuery)
		if !injectedErr(err) && !stale {
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
	if st, err := tr.Status(); err != nil || !st.Recovered {
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
	if st, err := w.tr.Status(); err != nil || st.InFlight != 0 || st.OpenForWrite != 0 {
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

// ---------------------------------------------------------------------
// drivers

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			return n
		}
	}
	return def
}

func envUint(name string, def uint64) uint64 {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err == nil {
			return n
		}
	}
	return def
}

type exploreResult struct {
	schedules int
	failed    *mworld
	seed      uint64
	stats     struct{ queries, blesses, crashes, steps int }
}

// explore runs n random schedules with seeds seed, seed+1, ... and stops
// at the first failure (of one of the kinds, or of any kind).
func explore(cfg modelCfg, seed uint64, n int, kinds ...failKind) exploreResult {
	var res exploreResult
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		w, err := newWorld(cfg.forSchedule(s), newRandChooser(s))
		if err != nil {
			panic(err)
		}
		w.runSchedule()
		res.schedules++
		res.stats.queries += w.queries
		res.stats.blesses += w.blesses
		res.stats.crashes += w.crashes
		if w.failed(kinds...) {
			res.failed, res.seed = w, s
			return res
		}
	}
	return res
}

func reportFailure(t *testing.T, test string, w *mworld, seed uint64, replay string) {
	t.Helper()
	var kinds []string
	for _, f := range w.fails {
		kinds = append(kinds, fmt.Sprintf("[%s] %s", f.kind, f.msg))
	}
	t.Errorf("model: schedule with seed %d (mode %s) fails:\n  %s\nreplay: %s\ntrace:\n%s",
		seed, w.cfg.mode(), strings.Join(kinds, "\n  "), replay, strings.Join(w.trace, "\n"))
}

var (
	sigNumbers = regexp.MustCompile(`[0-9]+`)
	sigLists   = regexp.MustCompile(`\[[^\]]*\]`)
	sigQuoted  = regexp.MustCompile(`"[^"]*"`)
)

// signature groups failures that are likely the same bug.
func signature(f mfail) string {
	msg := f.msg
	if i := strings.Index(msg, " on paths that did not change"); i >= 0 {
		msg = msg[:i]
	}
	msg = sigQuoted.ReplaceAllString(sigLists.ReplaceAllString(msg, "[..]"), `".."`)
	return string(f.kind) + ": " + sigNumbers.ReplaceAllString(msg, "N")
}

// runModel runs the random schedules of one model test. It does not stop
// at the first failure: it groups the failing schedules by the signatures
// of their failures and reports the first schedule of each group (with
// its trace and how to replay it; the first four in full).
func runModel(t *testing.T, name string, cfg modelCfg, defSchedules int) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	n := envInt("CHECKPOINT_MODEL_SCHEDULES", defSchedules)
	if testing.Short() && os.Getenv("CHECKPOINT_MODEL_SCHEDULES") == "" {
		n = max(n/4, 1)
	}
	cfg.steps = envInt("CHECKPOINT_MODEL_STEPS", cfg.steps)
	verbose := os.Getenv("CHECKPOINT_MODEL_VERBOSE") == "1"
	start := time.Now()
	res := exploreResult{}
	type group struct {
		count int
		seed  uint64
		w     *mworld
	}
	groups := make(map[string]*group)
	var order []string
	failed := 0
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		w, err := newWorld(cfg.forSchedule(s), newRandChooser(s))
		if err != nil {
			t.Fatal(err)
		}
		w.runSchedule()
		res.schedules++
		res.stats.queries += w.queries
		res.stats.blesses += w.blesses
		res.stats.crashes += w.crashes
		if verbose {
			t.Logf("seed %d:\n%s", s, strings.Join(w.trace, "\n"))
		}
		if w.failed() {
			failed++
			seen := make(map[string]bool)
			for _, f := range w.fails {
				// Fine and coarse mode fail for different reasons.
				sig := signature(f) + " [" + strings.SplitN(w.cfg.mode(), "+", 2)[0] + " mode]"
				if seen[sig] {
					continue
				}
				seen[sig] = true
				g := groups[sig]
				if g == nil {
					g = &group{seed: s, w: w}
					groups[sig] = g
					order = append(order, sig)
				}
				g.count++
			}
		}
	}
	for i, sig := range order {
		g := groups[sig]
		if i < 4 {
			reportFailure(t, name, g.w, g.seed, fmt.Sprintf(
				"CHECKPOINT_MODEL_SEED=%d CHECKPOINT_MODEL_SCHEDULES=1 CHECKPOINT_MODEL_STEPS=%d go test -race -run '^%s$' -v ./checkpoint/",
				g.seed, cfg.steps, name))
		}
	}
	if failed > 0 {
		var b strings.Builder
		for _, sig := range order {
			fmt.Fprintf(&b, "\n  %5d schedules (first: seed %d, mode %s): %s", groups[sig].count, groups[sig].seed, groups[sig].w.cfg.mode(), sig)
		}
		t.Errorf("model: %d of %d schedules failed; schedules by kind of failure:%s", failed, n, b.String())
	}
	t.Logf("model: %d schedules explored, seed %d (%d steps each; %d queries, %d blesses, %d crashes) in %v",
		res.schedules, seed, cfg.steps, res.stats.queries, res.stats.blesses, res.stats.crashes, time.Since(start).Round(time.Millisecond))
}

// TestModel explores the whole protocol: writers, renames (of
// directories too), files open for writing (with and without Touch, as
// mmap), queries, checkpoints, blesses, journal/syncfs errors, kills,
// power cuts and clean restarts.
func TestModel(t *testing.T) {
	runModel(t, "TestModel", defaultModelCfg(), 2000)
}

// TestModelConsumers is TestModel with a second, named consumer on its
// own schedule and its own DEST, checked by the same invariant: D1-D5 per
// consumer. (D4 is off: a path that one consumer's query derives is
// listed to the other too.)
func TestModelConsumers(t *testing.T) {
	cfg := defaultModelCfg()
	cfg.named = true
	cfg.d4Checks = false
	runModel(t, "TestModelConsumers", cfg, 1500)
}

// TestModelExhaustive explores every choice sequence up to a small number
// of steps, on a small world.
func TestModelExhaustive(t *testing.T) {
	depth := envInt("CHECKPOINT_MODEL_DEPTH", 3)
	cfg := modelCfg{
		steps: depth, tops: []string{"a", "b"}, handles: true, kills: true, powerCuts: true,
		directChecks: true, d4Checks: true, inflightChecks: true, inflightAfterPowerCut: true,
	}
	start := time.Now()
	ch := &dfsChooser{}
	n := 0
	for {
		w, err := newWorld(cfg, ch)
		if err != nil {
			t.Fatal(err)
		}
		w.runSchedule()
		n++
		if w.failed() {
			reportFailure(t, "TestModelExhaustive", w, 0, "choice sequence "+ch.sequence()+
				fmt.Sprintf(" (CHECKPOINT_MODEL_DEPTH=%d)", depth))
			break
		}
		if !ch.next() {
			break
		}
		if n > 2_000_000 {
			t.Fatalf("exhaustive exploration too large")
		}
	}
	t.Logf("model: %d schedules explored exhaustively (depth %d), seed n/a, in %v", n, depth, time.Since(start).Round(time.Millisecond))
}

// The tests of the test: the model must catch real bugs. Each runs the
// same schedules without the mutation (they must pass) and with it (one
// must break the consumer invariant), with the direct answer checks off
// so that the consumer invariant alone has to find it.

// The mutations are caught by the consumer invariant alone: D4 checks
// and renames across periods of open files are off, so that what breaks
// is the copy, not a stricter check.
func mutationCfg() modelCfg {
	cfg := defaultModelCfg()
	cfg.d4Checks = false
	cfg.renameOpenFileAcross = false
	cfg.mixModes = false // fine mode, store without flush
	cfg.directChecks = false
	cfg.inflightChecks = false
	return cfg
}

// base, if not nil, changes the configuration of both runs.
func checkMutationCaught(t *testing.T, name string, base, mutate func(*modelCfg)) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	const budget = 3000
	cfg := mutationCfg()
	if base != nil {
		base(&cfg)
	}
	mcfg := cfg
	mutate(&mcfg)
	start := time.Now()
	res := explore(mcfg, seed, budget, failDest)
	if res.failed == nil {
		t.Fatalf("%s: the model did not notice the mutation in %d schedules (seed %d)", name, res.schedules, seed)
	}
	t.Logf("model: mutation %s caught after %d schedules, seed %d (failing seed %d) in %v: %s",
		name, res.schedules, seed, res.seed, time.Since(start).Round(time.Millisecond), res.failed.fails[0].msg)
	// The same schedules without the mutation pass.
	unmutated := explore(cfg, seed, res.schedules)
	if unmutated.failed != nil {
		reportFailure(t, name+" (baseline)", unmutated.failed, unmutated.seed, "")
	}
}

// TestModelCatchesAppendBeforeDurable: a store whose Append returns before
// the records are durable (lost at a power cut) must break the invariant.
func TestModelCatchesAppendBeforeDurable(t *testing.T) {
	checkMutationCaught(t, "lieAppend", nil, func(c *modelCfg) { c.store.lieAppend = true })
}

// TestModelCatchesBlessWithoutSyncfs: a Syncfs that makes nothing durable
// must break the invariant (a power cut after the bless undoes what the
// consumer copied, and nothing lists it any more).
func TestModelCatchesBlessWithoutSyncfs(t *testing.T) {
	checkMutationCaught(t, "noopSyncfs", nil, func(c *modelCfg) { c.noopSyncfs = true })
}

// TestModelCatchesRemovalOffRoster: in coarse mode, a removal of a
// name that its directory's roster does not hold (created after the
// roster, by a modification of the previous period still in flight or
// of this one) must be synced; covering it with the roster anyway must
// break the invariant.
func TestModelCatchesRemovalOffRoster(t *testing.T) {
	checkMutationCaught(t, "allOnRoster",
		func(c *modelCfg) { c.store.async = true },
		func(c *modelCfg) { c.mutAllOnRoster = true })
}

// TestModelReplayIsDeterministic runs some schedules twice and compares
// the traces: a failing seed must replay.
func TestModelReplayIsDeterministic(t *testing.T) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	cfg := defaultModelCfg()
	for i := uint64(0); i < 20; i++ {
		var traces [2]string
		for k := range traces {
			w, err := newWorld(cfg.forSchedule(seed+i), newRandChooser(seed+i))
			if err != nil {
				t.Fatal(err)
			}
			w.runSchedule()
			traces[k] = strings.Join(w.trace, "\n")
		}
		if traces[0] != traces[1] {
			t.Fatalf("seed %d does not replay:\n--- first\n%s\n--- second\n%s", seed+i, traces[0], traces[1])
		}
	}
}
