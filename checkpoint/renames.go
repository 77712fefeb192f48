package checkpoint

import (
	"sort"
	"strings"
)

// Old names beneath renamed directories.
//
// rsync with --files-from neither recurses nor deletes beneath a
// directory that still exists. When directory O is renamed to N, the
// copy still holds O/x; if O is a directory again when rsync runs
// (created anew, or the other side of an exchange), rsync keeps the stale
// O/x unless O/x itself is listed, and --delete-missing-args then deletes
// it. So every name that an entry had beneath a renamed directory's old
// name must be listed, at every depth: a subdirectory O/e can be made
// again too, after the query and before rsync, and its stale O/e/y would
// then never be listed again (the rename's period is blessed by then).
//
// Each entry that can be stale in the copy has a name now (it is beneath
// N, and the query lists it) or had one when a record named it (it was
// changed, removed or moved away after the rename). Its names before
// that go back through the renames that moved an ancestor of it, newest
// first, one rename at a time: the history of one entry is one chain of
// names. So each source, a path and the moment it was named, is walked
// back through the renames older than that moment: at every step the
// newest older rename whose new name is an ancestor of the current name
// gives the name before it. An exchange maps both ways.
//
// The answer grows by at most one line per source and rename that moved
// one of its ancestors, never by the combinations of renames at
// different depths (mapping every listed path through every rename
// again, as an earlier version did, listed all of them: a rename storm of
// 12,000 operations gave 1.5 million lines). docs/design.md has the
// proof.

// renameAt is a rename record and its place in the scan (the order in
// which the intents were taken).
type renameAt struct {
	r  *Record
	at int
}

// source is a path as it was named at a moment of the scan; atNow for
// paths as they are now in BACKING.
type source struct {
	path string
	at   int
}

const atNow = int(^uint(0) >> 1)

// oldNames indexes renames of directories by the name they moved to.
type oldNames struct {
	byTo map[string][]renameStep // by new name, oldest first
}

type renameStep struct {
	at       int
	from, to string
	r        *Record
}

func newOldNames(renames []renameAt) *oldNames {
	o := &oldNames{byTo: make(map[string][]renameStep)}
	for _, ra := range renames {
		o.add(ra)
	}
	return o
}

// add indexes one more rename, newer than those before it.
func (o *oldNames) add(ra renameAt) {
	r := ra.r
	// A rename onto its own ancestor or descendant always fails (EINVAL,
	// ENOTEMPTY): it moved nothing.
	if r.Path == "" || r.Path2 == "" || r.Path == r.Path2 || beneath(r.Path, r.Path2) || beneath(r.Path2, r.Path) {
		return
	}
	o.byTo[r.Path2] = append(o.byTo[r.Path2], renameStep{ra.at, r.Path, r.Path2, r})
	if r.Flags&FlagExchange != 0 {
		o.byTo[r.Path] = append(o.byTo[r.Path], renameStep{ra.at, r.Path2, r.Path, r})
	}
}

// covers reports whether a rename seen so far moved an ancestor of p (so
// that p needs walking back).
func (o *oldNames) covers(p string) bool {
	for i := strings.IndexByte(p, '/'); i > 0; i = nextSlash(p, i) {
		if _, ok := o.byTo[p[:i]]; ok {
			return true
		}
	}
	return false
}

func nextSlash(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// newest gives the newest rename older than at whose new name is a
// proper ancestor of p.
func (o *oldNames) newest(p string, at int) (renameStep, bool) {
	var best renameStep
	found := false
	for i := strings.IndexByte(p, '/'); i > 0; i = nextSlash(p, i) {
		steps := o.byTo[p[:i]]
		// The last step older than at.
		k := sort.Search(len(steps), func(k int) bool { return steps[k].at >= at }) - 1
		if k >= 0 && (!found || steps[k].at > best.at) {
			best, found = steps[k], true
		}
	}
	return best, found
}

// walk calls emit with each older name of src, newest first.
func (o *oldNames) walk(src source, emit func(p string, r *Record)) {
	p, at := src.path, src.at
	for {
		s, ok := o.newest(p, at)
		if !ok {
			return
		}
		p, at = s.from+p[len(s.to):], s.at
		emit(p, s.r)
	}
}

// addOldNames lists the older names of every source (see the top of this
// file) that the answer does not list yet.
func addOldNames(paths map[string]*agg, o *oldNames, sources []source, add func(p string, r *Record)) {
	for _, s := range sources {
		o.walk(s, func(p string, r *Record) {
			if _, ok := paths[p]; !ok {
				add(p, r)
			}
		})
	}
}

// beneath reports whether p is strictly beneath the directory dir (both
// not empty).
func beneath(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && strings.HasPrefix(p, dir)
}
