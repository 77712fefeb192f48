package checkpoint

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// memBacking, the in-memory BACKING (see memstore_test.go), and
// listingBacking, which adds the optional Backing methods.

const (
	typFile = TypeFile
	typDir  = TypeDir
	typGone = TypeGone
)

type bnode struct {
	typ FileType
	ino uint64
	ver uint64
}

// bop is one operation applied to a memBacking, kept since the last
// Syncfs so that a power cut can keep any subset of them.
type bop struct {
	kind  string // write, writeino, mkdir, unlink, rmdir, rename, chmod, link
	path  string
	path2 string
	ino   uint64
	// parent, parent2: the directories that the intent named (rename,
	// unlink, rmdir). The kernel holds them locked from the lookup to
	// the operation, so the operation acts on them or fails: here it
	// fails if another directory is at their path by then, and a
	// rename fails if another inode is at its source (ino).
	parent, parent2 uint64
}

type memBacking struct {
	events *eventLog

	mu       sync.Mutex
	cur      map[string]bnode
	durable  map[string]bnode
	log      []bop // operations applied since the last Syncfs
	nextIno  uint64
	nextVer  uint64
	syncErrs []error
	syncfses int
	// noopSyncfs is a MUTATION for testing the tests: Syncfs reports
	// success without making anything durable.
	noopSyncfs bool
	// countInodes (the default): InodesUsed counts the entries, as for
	// a BACKING alone on its file system; otherwise it says 0, and the
	// answers have no valve (whole.go).
	countInodes bool
}

func newMemBacking(events *eventLog) *memBacking {
	return &memBacking{events: events, cur: make(map[string]bnode), durable: make(map[string]bnode),
		nextIno: 100, nextVer: 1, countInodes: true}
}

var _ Backing = (*memBacking)(nil)

var _ InodeCounter = (*memBacking)(nil)

func (b *memBacking) InodesUsed() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.countInodes {
		return 0
	}
	return uint64(len(b.cur)) + 1 // and the root
}

func (b *memBacking) Syncfs() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.syncErrs) > 0 {
		err := b.syncErrs[0]
		b.syncErrs = b.syncErrs[1:]
		b.events.add("syncfs-failed %v", err)
		return fmt.Errorf("membacking: syncfs: %w", err)
	}
	b.syncfses++
	if !b.noopSyncfs {
		b.durable = cloneTree(b.cur)
		b.log = nil
	}
	b.events.add("syncfs")
	return nil
}

func (b *memBacking) failNextSyncfs(err error) {
	b.mu.Lock()
	b.syncErrs = append(b.syncErrs, err)
	b.mu.Unlock()
}

func (b *memBacking) syncfsCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncfses
}

func (b *memBacking) Lstat(path string) (FileType, uint64, uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.cur[path]
	if !ok {
		// As backing.Tree.Lstat: shadowed if an ancestor is not a
		// directory (ENOTDIR), gone if the path is just not there.
		parts := strings.Split(path, "/")
		for i := 1; i < len(parts); i++ {
			a, ok := b.cur[strings.Join(parts[:i], "/")]
			if !ok {
				return typGone, 0, 0
			}
			if a.typ != typDir {
				return TypeShadowed, 0, 0
			}
		}
		return typGone, 0, 0
	}
	nlink := uint32(1)
	if n.typ == typDir {
		nlink = 2
	} else {
		nlink = 0
		for _, o := range b.cur {
			if o.ino == n.ino {
				nlink++
			}
		}
	}
	return n.typ, n.ino, nlink
}

// Walk calls fn for every path strictly beneath dir, in bytewise order;
// like backing.Tree.Walk, a dir that is gone or not a directory has
// nothing beneath it.
func (b *memBacking) Walk(dir string, fn func(string)) error {
	b.mu.Lock()
	n, ok := b.cur[dir]
	var paths []string
	if dir == "" || (ok && n.typ == typDir) {
		for p := range b.cur {
			if dir == "" || isBeneath(p, dir) {
				paths = append(paths, p)
			}
		}
	}
	b.mu.Unlock()
	sort.Strings(paths)
	for _, p := range paths {
		fn(p)
	}
	return nil
}

// WalkDirs is Walk with the inodes of the directories (DirWalker).
func (b *memBacking) WalkDirs(dir string, fn func(path string, ino uint64, isDir bool)) error {
	b.mu.Lock()
	t := cloneTree(b.cur)
	b.mu.Unlock()
	return (&memBacking{cur: t}).Walk(dir, func(p string) {
		n := t[p]
		ino := uint64(0)
		if n.typ == typDir {
			ino = n.ino
		}
		fn(p, ino, n.typ == typDir)
	})
}

// withDirs fills in the inodes that fs gives a namespace change's intent
// (Intent.Parent, Parent2, Ino2, and Ino of a directory removed), from
// BACKING as it is now, and the op's checks of them.
func (b *memBacking) withDirs(in Intent, op bop) (Intent, bop) {
	b.mu.Lock()
	defer b.mu.Unlock()
	dirIno := func(p string) uint64 {
		par := parentOf(p)
		if par == "" {
			return 1 // the root: any number, checkpoint does not read it
		}
		if n, ok := b.cur[par]; ok {
			return n.ino
		}
		// No directory there: fs could not have sent the operation.
		// A number no directory has, so that it fails (applyOp).
		return ^uint64(1)
	}
	switch in.Op {
	case OpMkdir:
		in.Parent = dirIno(in.Path)
	case OpUnlink, OpRmdir:
		in.Parent = dirIno(in.Path)
		if in.Op == OpRmdir {
			in.Ino = b.cur[in.Path].ino
		}
	case OpRename:
		in.Parent, in.Parent2 = dirIno(in.Path), dirIno(in.Path2)
		if in.Ino == 0 {
			in.Ino = b.cur[in.Path].ino // as fs's entryKind
		}
		if dst, ok := b.cur[in.Path2]; ok && (in.Flags&FlagExchange != 0 || dst.typ == typDir) {
			in.Ino2 = dst.ino // as fs: the other side, or a directory replaced
		}
		op.ino = in.Ino
	default:
		return in, op
	}
	op.parent, op.parent2 = in.Parent, in.Parent2
	return in, op
}

func isBeneath(p, dir string) bool {
	return len(p) > len(dir) && strings.HasPrefix(p, dir) && p[len(dir)] == '/'
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func cloneTree(m map[string]bnode) map[string]bnode {
	n := make(map[string]bnode, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// copyTree returns a copy of the current tree.
func (b *memBacking) copyTree() map[string]bnode {
	b.mu.Lock()
	defer b.mu.Unlock()
	return cloneTree(b.cur)
}

func (b *memBacking) get(p string) (bnode, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.cur[p]
	return n, ok
}

// pathOfIno returns the first name (bytewise) of inode ino.
func (b *memBacking) pathOfIno(ino uint64) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return pathOfIno(b.cur, ino)
}

func pathOfIno(t map[string]bnode, ino uint64) (string, bool) {
	best, ok := "", false
	for p, n := range t {
		if n.ino == ino && (!ok || p < best) {
			best, ok = p, true
		}
	}
	return best, ok
}

// apply performs op on the current tree (with POSIX-like preconditions:
// an operation whose precondition fails changes nothing) and logs it for
// the power-cut model. It returns whether anything changed.
func (b *memBacking) apply(op bop) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if op.kind == "write" || op.kind == "mkdir" {
		// A new object gets its inode number now, so that replaying the
		// log after a power cut recreates the same inode.
		if _, ok := b.cur[op.path]; !ok && op.ino == 0 {
			op.ino = b.nextIno
			b.nextIno++
		}
	}
	changed := applyOp(b.cur, op, &b.nextVer)
	if changed {
		b.log = append(b.log, op)
	}
	return changed
}

// applyOp is the semantics of the operations, on any tree.
func applyOp(t map[string]bnode, op bop, ver *uint64) bool {
	parentOK := func(p string) bool {
		par := parentOf(p)
		if par == "" {
			return true
		}
		n, ok := t[par]
		return ok && n.typ == typDir
	}
	bump := func() uint64 { *ver++; return *ver }
	sameDir := func(p string, ino uint64) bool {
		par := parentOf(p)
		return ino == 0 || par == "" || t[par].ino == ino
	}
	if !sameDir(op.path, op.parent) || (op.kind == "rename" && !sameDir(op.path2, op.parent2)) {
		return false
	}
	switch op.kind {
	case "write": // write (creating it if needed) the regular file op.path
		n, ok := t[op.path]
		if ok && n.typ != typFile {
			return false
		}
		if !ok {
			if !parentOK(op.path) || op.ino == 0 {
				return false
			}
			n = bnode{typ: typFile, ino: op.ino}
		}
		n.ver = bump()
		// Every name of the inode sees the new content.
		for p, o := range t {
			if o.ino == n.ino {
				o.ver = n.ver
				t[p] = o
			}
		}
		t[op.path] = n
		return true
	case "writeino": // write through an open file: whatever its name is now
		found := false
		v := bump()
		for p, o := range t {
			if o.ino == op.ino && o.typ == typFile {
				o.ver = v
				t[p] = o
				found = true
			}
		}
		return found
	case "mkdir":
		if _, ok := t[op.path]; ok || !parentOK(op.path) || op.ino == 0 {
			return false
		}
		t[op.path] = bnode{typ: typDir, ino: op.ino, ver: bump()}
		return true
	case "unlink":
		n, ok := t[op.path]
		if !ok || n.typ == typDir {
			return false
		}
		delete(t, op.path)
		return true
	case "rmdir":
		n, ok := t[op.path]
		if !ok || n.typ != typDir {
			return false
		}
		for p := range t {
			if isBeneath(p, op.path) {
				return false // ENOTEMPTY
			}
		}
		delete(t, op.path)
		return true
	case "chmod":
		n, ok := t[op.path]
		if !ok {
			return false
		}
		n.ver = bump()
		t[op.path] = n
		return true
	case "link": // op.path is the new name, op.path2 the existing one
		n, ok := t[op.path2]
		if !ok || n.typ == typDir || !parentOK(op.path) {
			return false
		}
		if _, ok := t[op.path]; ok {
			return false
		}
		t[op.path] = n
		return true
	case "rename": // rename(2) of op.path to op.path2
		src, ok := t[op.path]
		if !ok || (op.ino != 0 && src.ino != op.ino) || op.path == op.path2 || isBeneath(op.path2, op.path) || !parentOK(op.path2) {
			return false
		}
		if dst, ok := t[op.path2]; ok {
			switch {
			case src.typ == typDir && dst.typ != typDir:
				return false // ENOTDIR
			case src.typ != typDir && dst.typ == typDir:
				return false // EISDIR
			case dst.typ == typDir:
				for p := range t {
					if isBeneath(p, op.path2) {
						return false // ENOTEMPTY
					}
				}
			}
			if dst.ino == src.ino {
				return false // same inode: rename(2) does nothing
			}
			delete(t, op.path2)
		}
		moved := map[string]bnode{op.path2: src}
		delete(t, op.path)
		for p, n := range t {
			if isBeneath(p, op.path) {
				moved[op.path2+p[len(op.path):]] = n
				delete(t, p)
			}
		}
		for p, n := range moved {
			t[p] = n
		}
		return true
	}
	panic("unknown backing op " + op.kind)
}

// crash returns the BACKING that the next mount sees. After a process
// kill that is the current tree (the page cache survives, still unsynced).
// After a power
// cut it is the tree of the last Syncfs with any subset of the later
// operations replayed in order (keep decides, per operation): file
// systems do not promise to keep unsynced operations, nor their order,
// but each operation stays atomic.
func (b *memBacking) crash(powerCut bool, keep func(i int, op bop) bool) *memBacking {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := newMemBacking(b.events)
	n.nextIno, n.nextVer = b.nextIno, b.nextVer
	n.noopSyncfs = b.noopSyncfs
	if !powerCut {
		// The page cache survives, unsynced: a later power cut can
		// still lose what was not synced.
		n.cur = cloneTree(b.cur)
		n.durable = cloneTree(b.durable)
		n.log = slices.Clone(b.log)
		return n
	}
	n.cur = cloneTree(b.durable)
	for i, op := range b.log {
		if keep(i, op) {
			applyOp(n.cur, op, &n.nextVer)
		}
	}
	n.durable = cloneTree(n.cur) // what is there after the reboot is on disk
	return n
}

// pendingOps is the number of operations not yet made durable.
func (b *memBacking) pendingOps() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.log)
}

// when they exist (List for directory intents, LstatSorted for the
// answer), so that both the fallbacks and these paths are exercised.
type listingBacking struct{ *memBacking }

// List calls fn for the entries directly beneath dir ("" is the root).
func (b listingBacking) List(dir string, fn func(string)) error {
	return b.Walk(dir, func(p string) {
		if parentOf(p) == dir {
			fn(p)
		}
	})
}

// ListTyped is List with the entries' types (rosters ahead).
func (b listingBacking) ListTyped(dir string, fn func(string, bool)) error {
	return b.List(dir, func(p string) {
		typ, _, _ := b.Lstat(p)
		fn(p, typ == TypeDir)
	})
}

// LstatSorted is Lstat of each path, in order; a path that need rejects
// is TypeUnstated when its parent is a directory.
func (b listingBacking) LstatSorted(paths []string, need func(i int) bool, fn func(i int, typ FileType, ino uint64, nlink uint32)) {
	if !sort.StringsAreSorted(paths) {
		panic("LstatSorted: paths not sorted")
	}
	for i, p := range paths {
		if p != "" && !need(i) {
			typ := typDir // the root
			if par := parentOf(p); par != "" {
				typ, _, _ = b.Lstat(par)
			}
			if typ == typDir {
				fn(i, TypeUnstated, 0, 0)
				continue
			}
		}
		typ, ino, nlink := b.Lstat(p)
		fn(i, typ, ino, nlink)
	}
}
