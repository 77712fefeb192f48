package checkpoint

import (
	"fmt"
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
// then never be listed again.
//
// Two ways to find them (docs/design.md):
//
//   - The full mapping (mapAll): for every rename, newest first, every
//     listed path beneath its new name is listed once more beneath its old
//     name, and those take part in the older renames too. It needs no
//     order between records and renames, which concurrent writers blur,
//     and it is what the crash tests have proven. But it lists the
//     combinations of renames at different depths: a rename storm of
//     2,000 operations gave 4 million lines and a minute of query.
//   - The chain walk (walk): each source, a path and the moment a record
//     named it (or now, for what is in BACKING), goes back through the
//     renames that moved one of its ancestors, one rename at a time: the
//     history of one entry is one chain of names, so the answer grows by
//     at most a line per source and rename. A record stands for every
//     modification of its path until the end of its period (dedup), so
//     the walk also starts after each rename of an ancestor within that
//     period.
//
// A query uses the full mapping while it stays within a budget
// (oldNamesBudget), and the chain walk when it would not, with a warning
// in the log: a bounded answer rather than one that never comes from a
// daemon that runs out of memory. The chain walk is not complete: a
// directory rename whose intent was recorded but which then failed is
// walked as if it had moved the entry, and with concurrent writers
// make stormtest still finds stale directories now and then
// (docs/design.md has the figures and the next step: record the outcome
// of renames).

// renameAt is a rename record and its place in the scan (the order in
// which the intents were taken).
type renameAt struct {
	r  *Record
	at int
}

// source is a path as it was named at a moment of the scan; atNow for
// paths as they are now in BACKING. A record stands for every
// modification of its path until the end of its period (dedup keeps the
// first record of a path in a period), so until is the last place of
// that period: a rename before a later, deduplicated modification may
// have brought the entry that it modified.
type source struct {
	path  string
	at    int
	until int
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

func newOldNames() *oldNames {
	return &oldNames{byTo: make(map[string][]renameStep)}
}

// add indexes one more rename, newer than those before it.
func (o *oldNames) add(ra renameAt) {
	r := ra.r
	// A rename of anything but a directory moves nothing beneath its
	// names; its intent says which it was (fs takes the type from the
	// inode the kernel named, or from BACKING under the directory's
	// lock), and a rename whose source was missing, the commonest
	// failure, is not one of a directory.
	if movesNothing(r) || r.Flags&FlagDir == 0 {
		return
	}
	o.byTo[r.Path2] = append(o.byTo[r.Path2], renameStep{ra.at, r.Path, r.Path2, r})
	if r.Flags&FlagExchange != 0 {
		o.byTo[r.Path] = append(o.byTo[r.Path], renameStep{ra.at, r.Path2, r.Path, r})
	}
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

// walk calls emit with each older name of src, newest first: one chain
// from the moment of the record, and one from just after each rename
// that moved an ancestor of the path before the period's end (the entry
// that a deduplicated modification changed may have come with it).
func (o *oldNames) walk(src source, emit func(p string, r *Record)) {
	o.chain(src.path, src.at, emit)
	if src.until <= src.at {
		return
	}
	for i := strings.IndexByte(src.path, '/'); i > 0; i = nextSlash(src.path, i) {
		for _, s := range o.byTo[src.path[:i]] {
			if s.at > src.at && s.at <= src.until {
				o.chain(src.path, s.at+1, emit)
			}
		}
	}
}

// chain calls emit with the older names of p before the moment at,
// newest first.
func (o *oldNames) chain(p string, at int, emit func(p string, r *Record)) {
	for {
		s, ok := o.newest(p, at)
		if !ok {
			return
		}
		p, at = s.from+p[len(s.to):], s.at
		emit(p, s.r)
	}
}

// addOldNames lists the old names beneath renamed directories that the
// answer (paths) does not list yet: by the full mapping while it stays
// within its budget, else, with a warning, by the chain walk.
func (t *Tracker) addOldNames(from uint64, paths map[string]*agg, renames []*Record, add func(p string, r *Record)) error {
	if added, ok := mapAll(paths, renames, oldNamesBudget(len(paths))); ok {
		for _, a := range added {
			add(a.path, a.r)
		}
		return nil
	}
	t.log.Warn("query: the old names beneath renamed directories would pass the budget of the full mapping; listed by the chain walk instead (docs/usage.md)", "renames", len(renames))
	return t.walkOldNames(from, paths, add)
}

// walkOldNames lists the older names by the chain walk. The full
// mapping gave up, which is rare, so the sources are gathered only now,
// by a second scan of the journal (their places in it): every path a
// record of a modification names, and every path of the answer that no
// record names (found in BACKING now).
func (t *Tracker) walkOldNames(from uint64, paths map[string]*agg, add func(p string, r *Record)) error {
	o := newOldNames()
	var sources []source
	periodEnd := make(map[uint64]int) // the last place of each period
	at := 0
	err := scanAside(t.store, from, func(r *Record, _ bool) {
		at++
		periodEnd[r.Period] = at
		if r.Flags&FlagDerived != 0 || r.Op == OpEntries || r.Op == OpNames {
			return
		}
		for _, p := range []string{r.Path, r.Path2} {
			if p != "" {
				sources = append(sources, source{p, at, int(r.Period)})
			}
		}
		if r.Op == OpRename {
			o.add(renameAt{r, at})
		}
	})
	if err != nil {
		return fmt.Errorf("scan journal: %w", err)
	}
	for i := range sources {
		sources[i].until = periodEnd[uint64(sources[i].until)]
	}
	for p, a := range paths {
		if !a.recorded {
			sources = append(sources, source{p, atNow, atNow})
		}
	}
	for _, s := range sources {
		o.walk(s, func(p string, r *Record) {
			if _, ok := paths[p]; !ok {
				add(p, r)
			}
		})
	}
	return nil
}

type oldName struct {
	path string
	r    *Record
}

// mapAll is the full mapping: for every rename, newest first, each listed
// path beneath the new name (not one that an earlier answer derived:
// mapping those again would grow answers query after query) once more
// beneath the old name, and the added paths take part in the older
// renames (chains O -> N -> M). An exchange maps both ways. It gives up,
// adding nothing, once it would add more than budget paths.
func mapAll(paths map[string]*agg, renames []*Record, budget int) ([]oldName, bool) {
	if len(renames) == 0 {
		return nil, true
	}
	var keys []string
	for k, a := range paths {
		if !a.recorded || a.real {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var added []oldName
	seen := make(map[string]bool)
	for i := len(renames) - 1; i >= 0; i-- {
		r := renames[i]
		if movesNothing(r) {
			continue
		}
		pairs := [][2]string{{r.Path2, r.Path}} // from the new name back to the old
		if r.Flags&FlagExchange != 0 {
			pairs = append(pairs, [2]string{r.Path, r.Path2})
		}
		var fresh []string
		for _, pr := range pairs {
			from, to := pr[0], pr[1]
			prefix := from + "/"
			j := sort.SearchStrings(keys, prefix)
			for ; j < len(keys) && strings.HasPrefix(keys[j], prefix); j++ {
				p := to + keys[j][len(from):]
				if _, ok := paths[p]; !ok && !seen[p] {
					seen[p] = true
					added = append(added, oldName{p, r})
					fresh = append(fresh, p)
					if len(added) > budget {
						return nil, false
					}
				}
			}
		}
		if len(fresh) > 0 {
			keys = append(keys, fresh...)
			sort.Strings(keys)
		}
	}
	return added, true
}

// movesNothing reports whether a rename record cannot have moved anything
// beneath its names: a name is missing, or it renames onto its own
// ancestor or descendant, which always fails (EINVAL, ENOTEMPTY).
func movesNothing(r *Record) bool {
	return r.Path == "" || r.Path2 == "" || r.Path == r.Path2 || beneath(r.Path, r.Path2) || beneath(r.Path2, r.Path)
}

// beneath reports whether p is strictly beneath the directory dir (both
// not empty).
func beneath(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && strings.HasPrefix(p, dir)
}

// oldNamesBudget is how many old names the full mapping may add to an
// answer of n paths before the chain walk takes over: 4 times the answer
// and 100,000 more, far above what it adds outside rename storms (a
// renamed directory adds at most its own entries once more per rename).
// Below it, answers are exactly what the crash tests have proven; past
// it, the full mapping would grow towards millions of lines and
// gigabytes. (A variable, so that the tests can run the chain walk on
// small worlds.)
var oldNamesBudget = func(n int) int { return 4*n + 100_000 }
