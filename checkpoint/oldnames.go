package checkpoint

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
)

// Old names by inode (docs/design.md, "Old names", has the proof).
//
// A renamed directory leaves its old entries in the consumer's copy, and
// rsync with --files-from neither recurses nor deletes beneath a listed
// directory that exists. So beneath every old name X of a renamed
// directory that is a directory now, the answer lists the names that
// DEST may hold beneath X, and goes down through those that are
// directories now. What DEST holds beneath X was copied while some
// directory G was at X: G is the renamed directory itself, or what is at
// X now, or, further down, a directory that was an entry of such a G. The
// entries of G are known by inode, whatever paths G and its ancestors had
// when they changed:
//
//   - every rename and removal record names the directory it took an
//     entry from by inode (Record.Parent; Parent2 and Ino2 for the other
//     side of an exchange), and the inode of a directory that it moved or
//     removed (Ino), or replaced (Ino2);
//   - the walks of the renamed directories' names (expandRenames) give
//     the entries that every directory beneath them holds now, and where
//     each of those directories is now.
//
// So an entry that G held at any moment of the window is either still
// in G (a walk finds it, for G is beneath a walked name: it was moved,
// or it is beneath the old or new name of a moved ancestor), or left G by
// a rename or a removal (its own, or a rename that replaced it), whose
// record names G. The edges are a superset
// of what G held at any one moment, never a combination of paths: each
// level of the descent costs the entries of the directories that were
// there, once, which is what makes the answer linear in the tree where
// the path rule (renames.go) multiplied the names of every level.
//
// The visits need no time: a name is listed if G held it at any moment,
// and that covers the copy whenever it ran. Between the query and the
// copy a name that is not a directory now may become one, and the copy
// then keeps what DEST held beneath it. So what DEST may hold there is
// listed too (beneathLister): the edges that existed before the last
// bless, which is where time comes in (each edge's first record, against
// the Seq that the bless took). The renamed directory is also carried
// into the next period (FlagCarried, with its inode), as the path rule
// did.
//
// The rule needs every rename and removal of the window to carry its
// directories, and the walks to give inodes (DirWalker). Records written
// by an hsmfs that did not record them, and windows whose fine records
// may be lost (a crash in coarse mode: the directory intents answer for
// them by path), take the path rule instead; Stats counts them.

// errNoDirWalker: the Backing cannot give the walks' inodes.
var errNoDirWalker = errors.New("no DirWalker")

// rootKey stands for BACKING's root among the directories: records name
// it by the root node's number, walks by BACKING's, so neither is used.
const rootKey = ^uint64(0)

// DirWalker is an optional Backing method: Walk that also gives the inode
// of every directory beneath dir (0 for an entry that is not one).
type DirWalker interface {
	WalkDirs(dir string, fn func(path string, ino uint64, isDir bool)) error
}

// inoTree is the edges of one query: what each directory held at any
// moment of the window, from the records and the walks.
type inoTree struct {
	kids  map[uint64]map[string][]uint64 // directory -> name -> the directories it held under that name
	at    map[string]uint64              // path -> the directory there now (walked paths)
	where map[uint64]string              // directory -> its path now (walked paths)
	// first is the earliest record of the window that moved each edge
	// (parent, name, child) in or out, by Seq, and mkdirs the Seqs of
	// the mkdirs of each name of a directory, in order (see relevant).
	first  map[edgeKey]edgeEvent
	mkdirs map[slotKey][]uint64
	// complete: every rename and removal record of the window named its
	// directories, and every walk gave inodes.
	complete bool
}

// edgeKey is one edge: directory parent held child under name.
type edgeKey struct {
	parent uint64
	name   string
	child  uint64
}

// slotKey is a name of a directory.
type slotKey struct {
	parent uint64
	name   string
}

// edgeEvent is a record that moved an edge: its Seq, and whether it put
// the child there (a rename's new name) or took it away.
type edgeEvent struct {
	seq   uint64
	added bool
}

func newInoTree() *inoTree {
	return &inoTree{kids: make(map[uint64]map[string][]uint64), at: map[string]uint64{"": rootKey},
		where: map[uint64]string{rootKey: ""}, first: make(map[edgeKey]edgeEvent), mkdirs: make(map[slotKey][]uint64),
		complete: true}
}

// relevant says whether a consumer's copy may hold the edge: whether it
// existed at some moment from the start of the window to the copy of the
// last blessed answer, which ended before the bless that took
// Store.LastSeq = cutoff (docs/design.md, "What a copy may hold beneath a
// name"). Records that change one name of a directory do so under its
// lock, so their Seqs are in the order they ran in (a merged intent keeps
// the first one's Seq, which only makes a child come earlier). The child came there
// by the first record that moved the edge, if that put it there (a
// rename); else it was there before that record (or is there now, if
// none), and came by the latest mkdir of the name before, if any (a mkdir
// is recorded only for a free name: fs), else it was there at the start
// of the window. It is relevant if it came at the start, or by a record
// at or below cutoff.
func (e *inoTree) relevant(parent uint64, name string, child, cutoff uint64) bool {
	ev, ok := e.first[edgeKey{parent, name, child}]
	if ok && ev.added {
		return ev.seq <= cutoff
	}
	before := uint64(math.MaxUint64)
	if ok {
		before = ev.seq
	}
	made := e.mkdirs[slotKey{parent, name}]
	i, _ := slices.BinarySearch(made, before) // the mkdirs before it: made[:i]
	return i == 0 || made[i-1] <= cutoff
}

// relevantOf is the children of cs that parent held under name at a
// moment that a copy may hold (relevant).
func (e *inoTree) relevantOf(parent uint64, name string, cs []uint64, cutoff uint64) []uint64 {
	var rel []uint64
	for _, c := range cs {
		if e.relevant(parent, name, c, cutoff) {
			rel = append(rel, c)
		}
	}
	return rel
}

// edge records that directory parent held name (a directory child, if
// child is not 0).
func (e *inoTree) edge(parent uint64, name string, child uint64) {
	m := e.kids[parent]
	if m == nil {
		m = make(map[string][]uint64)
		e.kids[parent] = m
	}
	cs := m[name]
	if child != 0 && !slices.Contains(cs, child) {
		cs = append(cs, child)
	}
	m[name] = cs
}

// dirOf is the key of the directory that holds p, as a record named it.
func dirOf(p string, ino uint64) uint64 {
	if parentDir(p) == "" {
		return rootKey
	}
	return ino
}

// recordEdges adds the edges of a rename or removal record, and notes
// the first record that moved each. A record that should name its
// directory and does not makes the tree incomplete.
func (e *inoTree) recordEdges(r *Record) {
	side := func(p string, parent, child uint64, added bool) {
		if p == "" {
			return
		}
		if parent == 0 && parentDir(p) != "" {
			e.complete = false
			return
		}
		dir, name := dirOf(p, parent), baseName(p)
		e.edge(dir, name, child)
		if child == 0 {
			return
		}
		k := edgeKey{dir, name, child}
		if ev, ok := e.first[k]; !ok || r.Seq < ev.seq {
			e.first[k] = edgeEvent{r.Seq, added}
		}
	}
	switch r.Op {
	case OpMkdir:
		if r.Parent != 0 || parentDir(r.Path) == "" { // (an older hsmfs did not say where)
			k := slotKey{dirOf(r.Path, r.Parent), baseName(r.Path)}
			i, _ := slices.BinarySearch(e.mkdirs[k], r.Seq)
			e.mkdirs[k] = slices.Insert(e.mkdirs[k], i, r.Seq)
		}
	case OpUnlink, OpRmdir:
		side(r.Path, r.Parent, r.Ino, false)
	case OpRename:
		if movesNothing(r) || r.Ino == 0 && r.Flags&FlagDir == 0 {
			return // nothing was there to move (fs found no inode)
		}
		if r.Flags&FlagDir != 0 && (r.Ino == 0 || r.Flags&FlagExchange != 0 && r.Ino2 == 0) {
			e.complete = false // which directory moved is not known
			return
		}
		side(r.Path, r.Parent, r.Ino, false)
		if r.Parent2 != 0 || parentDir(r.Path2) == "" {
			side(r.Path2, r.Parent2, r.Ino, true)
		}
		switch {
		case r.Flags&FlagExchange != 0:
			side(r.Path2, r.Parent2, r.Ino2, false)
			side(r.Path, r.Parent, r.Ino2, true)
		case r.Ino2 != 0:
			// The directory that the rename replaced left (Parent2,
			// Path2's name) by it, as by a removal.
			side(r.Path2, r.Parent2, r.Ino2, false)
		}
	}
}

// walkTree walks the directory top, listing every path beneath it with fn,
// and adds what each directory holds now to the tree. Without a
// DirWalker, or if top is not a directory, it lists without edges.
func (t *Tracker) walkTree(e *inoTree, top string, fn func(p string)) error {
	dw, ok := t.backing.(DirWalker)
	if !ok {
		e.complete = false
		return t.backing.Walk(top, fn)
	}
	if top != "" {
		typ, ino, _ := t.backing.Lstat(top)
		if typ != TypeDir {
			return nil
		}
		e.at[top], e.where[ino] = ino, top
	}
	return dw.WalkDirs(top, func(p string, ino uint64, isDir bool) {
		fn(p)
		parent, ok := e.at[parentDir(p)]
		if !ok {
			return // beneath a directory that the walk could not stat
		}
		e.edge(parent, baseName(p), ino)
		if isDir && ino != 0 {
			e.at[p], e.where[ino] = ino, p
		}
	})
}

// inoNow is the inode of the directory at p now (0 if p is not one).
func (t *Tracker) inoNow(e *inoTree, p string) uint64 {
	if ino, ok := e.at[p]; ok {
		return ino
	}
	typ, ino, _ := t.backing.Lstat(p)
	if typ != TypeDir {
		ino = 0
	}
	e.at[p] = ino
	return ino
}

// parentNow is the key of the directory that holds p now.
func (t *Tracker) parentNow(e *inoTree, p string) uint64 {
	if parentDir(p) == "" {
		return rootKey
	}
	return t.inoNow(e, parentDir(p))
}

// inoRoot is an old name to visit: the directory that was there (0 if
// only what is there now is known), and the record the answer names.
type inoRoot struct {
	path string
	ino  uint64
	r    *Record
}

// inoJob is an old name waiting for its visit: the directories that were
// there (carried: those that an earlier window's renames moved away), and
// the record it is listed under.
type inoJob struct {
	inos, carried []uint64
	r             *Record
}

// visitByInode lists the old names beneath the roots: for every root,
// and every old name beneath one, that is a directory now, each name
// that a directory which was there held (add), going down through the
// names that are directories now; beneath a root or a name that is not,
// what a copy may hold there (beneathLister). Each path is visited once, with every directory that was
// there, by depth, so that a path's directories are all known before its
// visit. It returns false if the query was abandoned.
func (t *Tracker) visitByInode(e *inoTree, roots []inoRoot, cutoff uint64, budget int, isDir func(string) bool, stop func() bool, add func(p string, r *Record)) (ok, capped bool) {
	jobs := make(map[string]*inoJob)
	byDepth := make(map[int][]string)
	job := func(p string, r *Record) *inoJob {
		j := jobs[p]
		if j == nil {
			j = &inoJob{r: r}
			jobs[p] = j
			d := strings.Count(p, "/")
			byDepth[d] = append(byDepth[d], p)
		}
		return j
	}
	put := func(s []uint64, ino uint64) []uint64 {
		if ino != 0 && !slices.Contains(s, ino) {
			s = append(s, ino)
		}
		return s
	}
	for _, root := range roots {
		j := job(root.path, root.r)
		j.inos = put(j.inos, root.ino)
		if root.r.Flags&FlagCarried != 0 {
			j.carried = put(j.carried, root.ino)
		}
	}
	seen := make(map[string]bool)
	b := &beneathLister{t: t, e: e, cutoff: cutoff, stop: stop, add: add, done: make(map[string][]uint64),
		cands: map[string][]uint64{"": {rootKey}}, onceDone: make(map[uint64]bool), innerDone: make(map[uint64]bool),
		budget: budget}
	for d := 0; len(byDepth) > 0; d++ {
		level := byDepth[d]
		delete(byDepth, d)
		sort.Strings(level)
		for _, x := range level {
			if stop() {
				return false, b.capped
			}
			j := jobs[x]
			delete(jobs, x)
			if seen[x] {
				continue
			}
			seen[x] = true
			if !isDir(x) {
				if !b.list(x, j.carried, j.r, false) {
					return false, b.capped
				}
				continue
			}
			inos := j.inos
			if now := t.inoNow(e, x); now != 0 {
				inos = put(inos, now)
			}
			names := make(map[string][]uint64)
			for _, g := range inos {
				for name, cs := range e.kids[g] {
					names[name] = append(names[name], cs...)
				}
			}
			for _, name := range slices.Sorted(maps.Keys(names)) {
				p := x + "/" + name
				add(p, j.r)
				if !isDir(p) {
					// Only a name that held a directory has something
					// beneath it (a candidate is one of its edges).
					if len(names[name]) > 0 && !b.list(p, nil, j.r, true) {
						return false, b.capped
					}
					continue
				}
				pj := job(p, j.r)
				for _, c := range names[name] {
					pj.inos = put(pj.inos, c)
				}
			}
		}
	}
	return true, b.capped
}

// beneathLister lists what a copy may hold beneath names that are not
// directories now (list). rsync deletes or replaces such a name whole,
// unless it is a directory again when the copy runs, after the query:
// then DEST keeps what it held beneath it, and the next window may no
// longer know the entries that left those directories in this one (the
// carried rename finds only what is there then). So beneath a missing
// name the names are listed as gone, for the copy to delete them if the
// name is back; beneath a file they are shadowed, left out of the plain
// answer and kept for the next one (recordDerived).
//
// What the copy holds beneath such a name x was there at one moment,
// before the last bless: the directories that were at x then, their
// entries then, and so on down. So the edges followed are the relevant
// ones (inoTree.relevant), a directory is never followed into itself
// (no directory is beneath itself at any moment), and a directory's
// edges are listed at every path it is reached at, once each (done).
// If an answer was returned since the last bless, its copy may run at
// any moment, and every edge is relevant.
type beneathLister struct {
	t      *Tracker
	e      *inoTree
	cutoff uint64
	stop   func() bool
	add    func(p string, r *Record)
	done   map[string][]uint64 // path -> the directories listed beneath it
	cands  map[string][]uint64 // path -> candidates (memo)
	// onceDone: the directories whose edges are listed beneath the first
	// name that reaches them only: those beneath a carried directory
	// (this window's records do not show it there), and every one when
	// the copy may have run at any time (cutoff unknown), where every
	// edge is relevant and listing them at every path would multiply
	// the answer by the window's cycles (docs/design.md, "What a copy may
	// hold beneath a name": what is left of the gap), and every one once
	// the listing has added budget names (capped).
	onceDone  map[uint64]bool
	innerDone map[uint64]bool // onceDone of the names beneath visited directories
	budget    int
	added     int // visits and names so far
	capped    bool
}

// candidates is the directories that may have been at path p at a
// moment that a copy may hold: those at its parent's candidates' relevant
// edges named p's name, and the directory at p now if its parent now is
// a candidate of the parent path and the edge is relevant. (An edge that
// no record of the window moved and no walk saw has not changed in the
// window: its directory did not move, or it would be beneath a walked
// name, so its child is the one at p now.)
func (b *beneathLister) candidates(p string) []uint64 {
	if c, ok := b.cands[p]; ok {
		return c
	}
	up, name := b.candidates(parentDir(p)), baseName(p)
	var c []uint64
	for _, g := range up {
		for _, k := range b.e.relevantOf(g, name, b.e.kids[g][name], b.cutoff) {
			if !slices.Contains(c, k) {
				c = append(c, k)
			}
		}
	}
	if now := b.t.inoNow(b.e, p); now != 0 && !slices.Contains(c, now) {
		if parent := b.t.parentNow(b.e, p); slices.Contains(up, parent) && b.e.relevant(parent, name, now, b.cutoff) {
			c = append(c, now)
		}
	}
	b.cands[p] = c
	return c
}

// spend counts a visit or a name against the budget (which matters only
// where directories are listed at every path: the cutoff is known).
func (b *beneathLister) spend() {
	if b.added++; b.added > b.budget && b.cutoff != math.MaxUint64 {
		b.capped = true
	}
}

// list lists beneath x the relevant edges of its candidates, and of the
// directories that carried renames moved away from x in earlier windows
// (carried: the records of this window do not show them there), and so
// on down; it returns false if the query was abandoned.
func (b *beneathLister) list(x string, carried []uint64, r *Record, inner bool) bool {
	// The names beneath visited directories have their own once-map:
	// visited by depth, they would take a directory's one listing
	// before the old name that is a root at the same depth.
	onceDone := b.onceDone
	if inner {
		onceDone = b.innerDone
	}
	type dir struct {
		path    string
		ino     uint64
		up      *dir // the directory above, on the way from x
		carried bool // beneath a carried directory
	}
	above := func(d *dir, c uint64) bool { // c is d or a directory above it
		for ; d != nil; d = d.up {
			if d.ino == c {
				return true
			}
		}
		return false
	}
	var queue []*dir
	for _, g := range b.candidates(x) {
		queue = append(queue, &dir{path: x, ino: g})
	}
	for _, g := range carried {
		queue = append(queue, &dir{path: x, ino: g, carried: true})
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		once := d.carried || b.cutoff == math.MaxUint64 || b.capped
		if once {
			if onceDone[d.ino] {
				continue
			}
			onceDone[d.ino] = true
		} else {
			if slices.Contains(b.done[d.path], d.ino) {
				continue
			}
			b.done[d.path] = append(b.done[d.path], d.ino)
		}
		if b.stop() {
			return false
		}
		b.spend()
		// In order: the answer must not depend on a map's order.
		kids := b.e.kids[d.ino]
		blocked := false
		for _, name := range slices.Sorted(maps.Keys(kids)) {
			cs := kids[name]
			// Listed whatever came there: a file that was there leaves
			// no number in the edges. Only the descent is relevant.
			rel := b.e.relevantOf(d.ino, name, cs, b.cutoff)
			p := d.path + "/" + name
			b.add(p, r)
			b.spend()
			for _, c := range rel {
				switch {
				case above(d, c):
					blocked = true
				case !(b.capped && onceDone[c]):
					queue = append(queue, &dir{path: p, ino: c, up: d, carried: d.carried})
				}
			}
		}
		if blocked && !once {
			// Another way to this path, with other directories above,
			// may go down where this one could not: it visits again (the
			// budget bounds the ways).
			b.done[d.path] = slices.DeleteFunc(b.done[d.path], func(g uint64) bool { return g == d.ino })
		}
	}
	return true
}

// carryByInode is the renamed directories to carry into the next
// period: each root's directory to where it is now, if it is somewhere
// else; a carried one whose directory is gone is dropped.
func (t *Tracker) carryByInode(e *inoTree, roots []inoRoot) []carried {
	var carry []carried
	seen := make(map[carried]bool)
	for _, root := range roots {
		if root.ino == 0 {
			continue
		}
		y, ok := e.where[root.ino]
		if !ok && root.r.Flags&FlagCarried != 0 {
			// Not walked in this window: still where the last query
			// found it, or gone.
			to := root.r.Path2 // the carried directory's later name
			if typ, ino, _ := t.backing.Lstat(to); typ == TypeDir && ino == root.ino {
				y, ok = to, true
			}
		}
		c := carried{from: root.path, to: y, ino: root.ino}
		if ok && y != root.path && !seen[c] {
			seen[c] = true
			carry = append(carry, c)
		}
	}
	sort.Slice(carry, func(i, j int) bool {
		if carry[i].from != carry[j].from {
			return carry[i].from < carry[j].from
		}
		return carry[i].to < carry[j].to
	})
	return carry
}

// beneathBudget is how many names the listing beneath names that are not
// directories now may add at every path before it lists each directory
// once (a variable: a test sets it to 0).
var beneathBudget = func(paths int) int { return paths + 1_000 }

// addOldNamesByInode is the query stage of the inode rule: it lists the
// old names beneath renamed directories, and leaves in q.carry the
// renamed directories to carry into P.
func (t *Tracker) addOldNamesByInode(q *queryRun) error {
	if _, ok := t.backing.(DirWalker); !ok {
		return errNoDirWalker
	}
	var roots, carried []inoRoot
	for _, r := range q.carried {
		to := r.Path2 // the carried directory's later name
		ino := r.Ino
		if ino == 0 { // carried by an hsmfs that did not say which directory
			ino = t.inoNow(q.tree, to)
		}
		carried = append(carried, inoRoot{r.Path, ino, r})
	}
	if len(carried) > 0 {
		applied, _ := carriedInWindow(q, q.listedKeys(), t.async != nil && t.async.Lost())
		applies := make(map[*Record]bool, len(applied))
		for _, r := range applied {
			// Where the carried directory's entries are now; not
			// listed (the answer that carried it did). It is visited
			// whole from its old name.
			applies[r] = true
			to := r.Path2 // the carried directory's later name
			if err := t.walkTree(q.tree, to, func(string) {}); err != nil {
				return fmt.Errorf("walk carried directory %q: %w", to, err)
			}
		}
		for _, c := range carried {
			if applies[c.r] {
				roots = append(roots, c)
			}
		}
	}
	for _, r := range q.renames {
		if movesNothing(r) || r.Flags&FlagDir == 0 {
			continue
		}
		roots = append(roots, inoRoot{r.Path, r.Ino, r})
		if r.Flags&FlagExchange != 0 {
			roots = append(roots, inoRoot{r.Path2, r.Ino2, r})
		}
	}
	// Inode numbers are reused: a number may stand for several
	// directories of the window, which the edges then put at several
	// places at once, and their entries at each. Past a budget (the
	// paths listed so far, and 1,000), each directory is listed beneath
	// the first name only.
	budget := beneathBudget(len(q.paths))
	ok, capped := t.visitByInode(q.tree, roots, q.cutoff, budget, t.isDirNow(), q.abandoned, q.addOldName())
	if !ok {
		return ErrAbandoned
	}
	if capped {
		t.oldNamesCapped.Add(1)
	}
	q.carry = t.carryByInode(q.tree, append(carried, roots...))
	return nil
}
