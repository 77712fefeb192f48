package checkpoint

import (
	"errors"
	"fmt"
	"maps"
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
// The records say nothing of time, and need not: a name is listed if G
// held it at any moment, and that covers the copy whenever it ran.
// Between the query and the copy an old name that is not a directory now
// may become one. So the names beneath it are listed too (listBeneath),
// and the renamed directory is carried into the next period
// (FlagCarried, with its inode), as the path rule did.
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
	// complete: every rename and removal record of the window named its
	// directories, and every walk gave inodes.
	complete bool
}

func newInoTree() *inoTree {
	return &inoTree{kids: make(map[uint64]map[string][]uint64), at: map[string]uint64{"": rootKey},
		where: map[uint64]string{rootKey: ""}, complete: true}
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

// recordEdges adds the edges of a rename or removal record. A record
// that should name its directory and does not makes the tree incomplete.
func (e *inoTree) recordEdges(r *Record) {
	side := func(p string, parent, child uint64) {
		if p == "" {
			return
		}
		if parent == 0 && parentDir(p) != "" {
			e.complete = false
			return
		}
		e.edge(dirOf(p, parent), baseName(p), child)
	}
	switch r.Op {
	case OpUnlink, OpRmdir:
		side(r.Path, r.Parent, r.Ino)
	case OpRename:
		if movesNothing(r) || r.Ino == 0 && r.Flags&FlagDir == 0 {
			return // nothing was there to move (fs found no inode)
		}
		if r.Flags&FlagDir != 0 && (r.Ino == 0 || r.Flags&FlagExchange != 0 && r.Ino2 == 0) {
			e.complete = false // which directory moved is not known
			return
		}
		side(r.Path, r.Parent, r.Ino)
		if r.Parent2 != 0 || parentDir(r.Path2) == "" {
			side(r.Path2, r.Parent2, r.Ino)
		}
		switch {
		case r.Flags&FlagExchange != 0:
			side(r.Path2, r.Parent2, r.Ino2)
			side(r.Path, r.Parent, r.Ino2)
		case r.Ino2 != 0:
			// The directory that the rename replaced left (Parent2,
			// Path2's name) by it, as by a removal.
			side(r.Path2, r.Parent2, r.Ino2)
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

// inoRoot is an old name to visit: the directory that was there (0 if
// only what is there now is known), and the record the answer names.
type inoRoot struct {
	path string
	ino  uint64
	r    *Record
}

// inoJob is an old name waiting for its visit.
type inoJob struct {
	inos []uint64
	r    *Record
}

// visitByInode lists the old names beneath the roots: for every root,
// and every old name beneath one, that is a directory now, each name
// that a directory which was there held (add), going down through the
// names that are directories now; beneath one that is not, listBeneath.
// Each path is visited once, with every directory that was there, by
// depth, so that a path's directories are all known before its visit.
// It returns false if the query was abandoned.
func (t *Tracker) visitByInode(e *inoTree, roots []inoRoot, isDir func(string) bool, stop func() bool, add func(p string, r *Record)) bool {
	jobs := make(map[string]*inoJob)
	byDepth := make(map[int][]string)
	put := func(p string, ino uint64, r *Record) {
		j := jobs[p]
		if j == nil {
			j = &inoJob{r: r}
			jobs[p] = j
			d := strings.Count(p, "/")
			byDepth[d] = append(byDepth[d], p)
		}
		if ino != 0 && !slices.Contains(j.inos, ino) {
			j.inos = append(j.inos, ino)
		}
	}
	for _, root := range roots {
		put(root.path, root.ino, root.r)
	}
	seen := make(map[string]bool)
	beneathDone := make(map[uint64]bool)
	for d := 0; len(byDepth) > 0; d++ {
		level := byDepth[d]
		delete(byDepth, d)
		sort.Strings(level)
		for _, x := range level {
			if stop() {
				return false
			}
			j := jobs[x]
			delete(jobs, x)
			if seen[x] {
				continue
			}
			seen[x] = true
			if !isDir(x) {
				listBeneath(e, x, j, beneathDone, add)
				continue
			}
			inos := j.inos
			if now := t.inoNow(e, x); now != 0 && !slices.Contains(inos, now) {
				inos = append(inos, now)
			}
			names := make(map[string][]uint64)
			for _, g := range inos {
				for name, cs := range e.kids[g] {
					names[name] = append(names[name], cs...)
				}
			}
			for name, cs := range names {
				p := x + "/" + name
				add(p, j.r)
				if !isDir(p) {
					continue
				}
				put(p, 0, j.r)
				for _, c := range cs {
					put(p, c, j.r)
				}
			}
		}
	}
	return true
}

// listBeneath lists, beneath an old name x that is not a directory now,
// every name that the directories which were there held, and so on down
// through their edges. rsync deletes or replaces x whole, unless x is a
// directory again when the copy runs, after the query: then DEST keeps
// what it held beneath x, and the next window may no longer know the
// entries that left those directories in this one (the carried rename
// finds only what is there then). Beneath a missing x the names are
// listed as gone, so that the copy deletes them if x is back; beneath a
// file they are shadowed, left out of the plain answer and kept for the
// next one (recordDerived). Each directory's edges are listed once per
// query (done), beneath the first old name that reaches it: a bound of
// the edges, not of the paths.
func listBeneath(e *inoTree, x string, j *inoJob, done map[uint64]bool, add func(p string, r *Record)) {
	type dir struct {
		path string
		inos []uint64
	}
	queue := []dir{{x, j.inos}}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, g := range d.inos {
			if done[g] {
				continue
			}
			done[g] = true
			// In order: which old name a directory's edges are listed
			// beneath must not depend on a map's order.
			for _, name := range slices.Sorted(maps.Keys(e.kids[g])) {
				p := d.path + "/" + name
				add(p, j.r)
				if cs := e.kids[g][name]; len(cs) > 0 {
					queue = append(queue, dir{p, cs})
				}
			}
		}
	}
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
	if !t.visitByInode(q.tree, roots, t.isDirNow(), q.abandoned, q.addOldName()) {
		return ErrAbandoned
	}
	q.carry = t.carryByInode(q.tree, append(carried, roots...))
	return nil
}
