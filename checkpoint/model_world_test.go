package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// The model of model_test.go: its choosers, configurations and world.

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
	mixModes bool
	// nestedDirs: mkdir and rmdir also at a top's child, so that renamed
	// directories hold directories (TestModelNestedDirs).
	nestedDirs bool
	listing    bool
	pathsOnly  bool // queries with QueryOptions.PathsOnly
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
