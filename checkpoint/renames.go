package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Old names beneath renamed directories by path: the path rule, which a
// query takes only where the inode rule (oldnames.go) cannot see every
// edge (docs/design.md, "Old names", has the proof of both). While it is
// small, a query uses the full mapping (mapAll):
// every listed path beneath a new name, listed beneath the old name too,
// at every depth. Past its budget (rename storms), the rule below.
//
// rsync with --files-from neither recurses nor deletes beneath a
// directory that still exists, and with --delete-missing-args --force a
// listed path that is missing (or is not a directory any more) is
// deleted or replaced in DEST with everything beneath it. When directory
// O is renamed to N, the record lists O, and the copy's stale O/x goes
// with O unless O is a directory again when rsync runs. So:
//
//   - for every old name X at or beneath O that is a directory now, list
//     X's old immediate entries X/e, and descend into those that are
//     directories now;
//   - an old name that is not a directory now is listed (it is O, or an
//     immediate entry of a directory that is one now), and rsync deletes
//     or replaces it whole: nothing beneath it needs listing.
//
// The old entries of X are names that an entry had directly beneath X,
// or beneath a later name of the directory that was at X. Whatever such
// an entry became is listed now: a record names it where it was
// modified, moved or removed, and the walk of the renamed directories'
// new names finds where it is now. So its name is a component of a
// listed path, right after a later name of X. Those later names, the
// aliases of X, are X moved by the renames of the window, taken in any
// order and any number of times: the records do not say which renames
// failed, and concurrent renames of a directory and of its ancestor may
// be recorded in either order. When the aliases are too many (rename
// storms), the old entries of X are taken from a superset instead: every
// name that a listed path has beneath a renamed directory's new name
// (every later name of X is at or beneath one). Either way the answer
// grows with the directories that exist now beneath old names, times
// their old entries, once each, not with the combinations of renames.
//
// Between the query and the copy, an old name that was not a directory
// may become one, and the copy then keeps what DEST held beneath it. So
// the query carries each renamed directory forward: a derived record of
// the new period, O -> Y, for every alias Y of O that holds something or
// is a directory now (FlagCarried). Every later query takes it as a rename from before its
// window, for the aliases, and carries it again. It walks Y and visits
// what may have been made (carriedInWindow) only if one of its records
// names a path at, above or beneath O; else nothing was made there, and
// a copy in that window deleted the stale names with the listed ones.

// pathRuleOnly makes every query take the path rule (tests of it).
var pathRuleOnly = false

// aliasBudget caps the work of finding the aliases of one old name, in
// renames applied; past it, the superset is used.
const aliasBudget = 1 << 14

// carried is a renamed directory carried into the next period: O -> Y.
type carried struct {
	from, to string
	ino      uint64 // the directory, if known (oldnames.go)
}

// oldNameRule finds the old names of one query.
type oldNameRule struct {
	moves map[string][]string // old name -> new names (both ways for an exchange), unique
	keys  []string            // the listed paths (and carried walks), sorted
	isDir func(p string) bool
	seen  map[string]bool // old names visited
	// maxDepth: an alias deeper than any listed path and any old name
	// together can only come from renames into their own later names
	// (a -> b/a, b -> a, ...), which grow without end: the superset then.
	maxDepth int
	// superset: every name that a listed path has beneath a new name
	// (made at the first need).
	superset []string
	// tooMany: the names whose aliases passed aliasBudget or maxDepth
	// (aliasesOf).
	tooMany map[string]bool
	// stop is QueryOptions.Abandoned; once it says true, stopped is set
	// and the rule does no more work.
	stop    func() bool
	stopped bool
}

// halt reports whether the rule must stop (the query was abandoned).
func (o *oldNameRule) halt() bool {
	if !o.stopped && o.stop != nil && o.stop() {
		o.stopped = true
	}
	return o.stopped
}

func newOldNameRule(renames []*Record, keys []string, isDir func(string) bool) *oldNameRule {
	o := &oldNameRule{moves: make(map[string][]string), keys: keys,
		isDir: isDir, seen: make(map[string]bool), tooMany: make(map[string]bool)}
	add := func(from, to string, r *Record) {
		if !slices.Contains(o.moves[from], to) {
			o.moves[from] = append(o.moves[from], to)
		}
	}
	depth := func(p string) int { return strings.Count(p, "/") + 1 }
	for _, k := range keys {
		o.maxDepth = max(o.maxDepth, depth(k))
	}
	deepest := 0
	for _, r := range renames {
		deepest = max(deepest, depth(r.Path), depth(r.Path2))
	}
	o.maxDepth += deepest
	for _, r := range renames {
		if r.Flags&FlagCarried != 0 {
			to := r.Path2 // the carried directory's later name
			add(r.Path, to, r)
			continue
		}
		add(r.Path, r.Path2, r)
		if r.Flags&FlagExchange != 0 {
			add(r.Path2, r.Path, r)
		}
	}
	return o
}

// aliasesOf is x and every name that the directory at x may have had
// later; false if finding them would pass aliasBudget or maxDepth.
//
// A name whose aliases were too many (tooMany) makes every name that
// reaches it fail at once, with the same result as the whole search:
// the reaching name's aliases hold all of its aliases, so their search
// meets the same too-deep name or does at least the same work. After a
// crash, when every renamed directory of a storm goes through here,
// that is the difference between one search past the budget and one
// per directory.
func (o *oldNameRule) aliasesOf(x string) (map[string]bool, bool) {
	if o.tooMany[x] {
		return nil, false
	}
	aliases := map[string]bool{x: true}
	queue := []string{x}
	work := 0
	fail := func() (map[string]bool, bool) {
		o.tooMany[x] = true
		return nil, false
	}
	for len(queue) > 0 {
		y := queue[0]
		queue = queue[1:]
		for i := len(y); i > 0; i = strings.LastIndexByte(y[:i], '/') {
			for _, to := range o.moves[y[:i]] {
				if work++; work > aliasBudget {
					return fail()
				}
				z := to + y[i:]
				if strings.Count(z, "/") >= o.maxDepth || o.tooMany[z] {
					return fail()
				}
				if !aliases[z] {
					aliases[z] = true
					queue = append(queue, z)
				}
			}
		}
	}
	return aliases, true
}

// supersetNames is every name that a listed path has at or beneath a new
// name of a rename, below that new name.
func (o *oldNameRule) supersetNames() []string {
	if o.superset != nil {
		return o.superset
	}
	tos := make(map[string]bool)
	for _, ts := range o.moves {
		for _, to := range ts {
			tos[to] = true
		}
	}
	names := make(map[string]bool)
	for _, p := range o.keys {
		for i := strings.IndexByte(p, '/'); i > 0; i = nextSlash(p, i) {
			if tos[p[:i]] {
				for _, n := range strings.Split(p[i+1:], "/") {
					names[n] = true
				}
				break
			}
		}
	}
	o.superset = make([]string, 0, len(names))
	for n := range names {
		o.superset = append(o.superset, n)
	}
	sort.Strings(o.superset)
	return o.superset
}

func nextSlash(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// children calls fn with each name directly beneath dir that is a
// component of a listed path.
func (o *oldNameRule) children(dir string, fn func(name string)) {
	prefix := dir + "/"
	j := sort.SearchStrings(o.keys, prefix)
	for j < len(o.keys) && strings.HasPrefix(o.keys[j], prefix) {
		rest := o.keys[j][len(prefix):]
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			fn(rest)
			j++
			continue
		}
		fn(rest[:i])
		// Skip the rest of the subtree: every key beneath
		// prefix+name+"/" sorts before prefix+name+"0".
		j += sort.SearchStrings(o.keys[j:], prefix+rest[:i]+"0")
	}
}

// visit lists the old entries of x, a directory now, and descends into
// those that are directories now. superset: an ancestor's aliases were
// too many, so x's are too.
func (o *oldNameRule) visit(x string, superset bool, r *Record, add func(p string, r *Record)) {
	if o.seen[x] || o.halt() {
		return
	}
	o.seen[x] = true
	names := make(map[string]bool)
	var aliases map[string]bool
	if !superset {
		aliases, superset = o.aliasesOf(x)
		superset = !superset
	}
	if superset {
		for _, n := range o.supersetNames() {
			names[n] = true
		}
		aliases = map[string]bool{x: true}
	}
	for y := range aliases {
		o.children(y, func(name string) { names[name] = true })
	}
	var dirs []string
	for name := range names {
		p := x + "/" + name
		add(p, r)
		if o.isDir(p) {
			dirs = append(dirs, p)
		}
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		o.visit(d, superset, r, add)
	}
}

// holds reports whether a listed path is beneath y.
func (o *oldNameRule) holds(y string) bool {
	j := sort.SearchStrings(o.keys, y+"/")
	return j < len(o.keys) && strings.HasPrefix(o.keys[j], y+"/")
}

// oldRoot is an old name to visit, and the rename record that the
// answer names for its old entries.
type oldRoot struct {
	path string
	r    *Record
}

// apply runs the rule: every root that is a directory now is visited,
// and every renamed directory is carried forward to its aliases that
// hold something or are directories now (to every new name, if its
// aliases are too many).
func (o *oldNameRule) apply(roots []oldRoot, add func(p string, r *Record)) []carried {
	sort.SliceStable(roots, func(i, j int) bool { return roots[i].path < roots[j].path })
	for _, root := range roots {
		if o.isDir(root.path) {
			o.visit(root.path, false, root.r, add)
		}
	}
	froms := make([]string, 0, len(o.moves))
	for from := range o.moves {
		froms = append(froms, from)
	}
	sort.Strings(froms)
	var carry []carried
	for _, from := range froms {
		if o.halt() {
			return nil
		}
		aliases, ok := o.aliasesOf(from)
		if !ok {
			aliases = make(map[string]bool)
			for _, ts := range o.moves {
				for _, to := range ts {
					aliases[to] = true
				}
			}
		}
		tos := make([]string, 0, len(aliases))
		for y := range aliases {
			if y != from && (o.holds(y) || o.isDir(y)) {
				tos = append(tos, y)
			}
		}
		sort.Strings(tos)
		for _, y := range tos {
			carry = append(carry, carried{from: from, to: y})
		}
	}
	return carry
}

// oldNameRenames is the renames that may have moved a directory: only a
// rename of a directory can move a name beneath another (the intent says
// which it was: fs takes the type from the inode the kernel named, and a
// rename whose source was missing, the commonest failure, is not one of
// a directory), and a rename onto its own ancestor or descendant always
// fails.
func oldNameRenames(carriedRecs, renames []*Record) []*Record {
	out := slices.Clone(carriedRecs)
	for _, r := range renames {
		if !movesNothing(r) && r.Flags&FlagDir != 0 {
			out = append(out, r)
		}
	}
	return out
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

// addOldNames is the query stage of the rule: it lists the old names
// beneath renamed directories, and leaves in q.carry the renamed
// directories to carry into P.
func (t *Tracker) addOldNames(q *queryRun) error {
	if len(q.renames) == 0 && len(q.carried) == 0 {
		return nil
	}
	if q.tree.complete && !q.dirIntentsAnswered && !pathRuleOnly {
		if err := t.addOldNamesByInode(q); !errors.Is(err, errNoDirWalker) {
			return err
		}
	}
	if len(oldNameRenames(q.carried, q.renames)) > 0 {
		t.oldNameFallbacks.Add(1)
	}
	// Outside rename storms the full mapping is small: every listed
	// path beneath a new name, listed beneath the old name too, at every
	// depth. It needs nothing carried, and it serves consumers that copy
	// an answer long after the next query (fleet readers). Past its
	// budget, the rule below.
	if len(q.carried) == 0 {
		if added, ok := mapAll(q.paths, q.renames, fullMappingBudget(len(q.paths))); ok {
			for _, a := range added {
				c := *a.r
				c.Ino = 0
				q.add(a.path, &c, false)
			}
			return nil
		}
	}
	keys := q.listedKeys()
	carriedRecs, roots := carriedInWindow(q, keys, t.async != nil && t.async.Lost())
	// Every carried rename takes part in the aliases, and is carried
	// again: a consumer may copy an answer long after the next query
	// (an exporter blesses once the stream has it; its readers copy
	// later), so an old name may become a directory before such a copy
	// in any later window. Only those that apply are walked and visited.
	renames := oldNameRenames(q.carried, q.renames)
	if len(renames) == 0 {
		return nil
	}
	if len(carriedRecs) > 0 {
		// Where a carried directory's old entries are now, as the
		// walk of a rename's new name finds them; not listed (the
		// answer that carried it did).
		walked := make(map[string]bool)
		for _, r := range carriedRecs {
			to := r.Path2 // the carried directory's later name
			if walked[to] {
				continue
			}
			walked[to] = true
			if err := t.backing.Walk(to, func(p string) { keys = append(keys, p) }); err != nil {
				return fmt.Errorf("walk carried directory %q: %w", to, err)
			}
		}
		sort.Strings(keys)
	}
	isDir := t.isDirNow()
	for _, r := range renames {
		if r.Flags&FlagCarried == 0 {
			roots = append(roots, oldRoot{r.Path, r})
			if r.Flags&FlagExchange != 0 {
				roots = append(roots, oldRoot{r.Path2, r})
			}
		}
	}
	rule := newOldNameRule(renames, keys, isDir)
	rule.stop = q.abandoned
	q.carry = rule.apply(roots, q.addOldName())
	if rule.stopped {
		return ErrAbandoned
	}
	return nil
}

// listedKeys is the listed paths, sorted: found now, or named by a
// record of a modification (not those that this consumer's own earlier
// answers derived: their old names were found then).
func (q *queryRun) listedKeys() []string {
	keys := make([]string, 0, len(q.paths))
	for p, a := range q.paths {
		if !a.recorded || a.real {
			keys = append(keys, p)
		}
	}
	sort.Strings(keys)
	return keys
}

// isDirNow is Lstat's "is a directory now", cached for one query.
func (t *Tracker) isDirNow() func(p string) bool {
	dirs := make(map[string]bool)
	return func(p string) bool {
		d, ok := dirs[p]
		if !ok {
			typ, _, _ := t.backing.Lstat(p)
			d = typ == TypeDir
			dirs[p] = d
		}
		return d
	}
}

// addOldName lists an old name p that rename record r leads to, unless
// p is listed already; the answer names r without the inode it moved.
func (q *queryRun) addOldName() func(p string, r *Record) {
	stripped := make(map[*Record]*Record)
	return func(p string, r *Record) {
		if _, ok := q.paths[p]; ok {
			return
		}
		s := stripped[r]
		if s == nil {
			c := *r
			c.Ino = 0
			s = &c
			stripped[r] = s
		}
		q.add(p, s, false)
	}
}

// carriedInWindow is the carried renames that apply to this query, and
// the old names beneath them to visit: a carried O -> Y applies if a
// record of the window names O, an ancestor of O or a path beneath O (a
// directory intent counts for its directory), for something may have
// been made there between the query that carried it and the copy. What
// may have been made is then visited: O whole if O or an ancestor is
// named, else each named path beneath O (visit skips the files). keys
// are the listed paths, sorted.
func carriedInWindow(q *queryRun, keys []string, lost bool) ([]*Record, []oldRoot) {
	if len(q.carried) == 0 {
		return nil, nil
	}
	// A directory intent counts only where its fine records may be
	// lost (answerDirIntents); elsewhere they name what was made.
	intents := make(map[string]bool)
	for _, r := range q.entryRecs {
		if r.Run <= q.st.LastUncleanRun || lost {
			intents[r.Path] = true
		}
	}
	named := func(p string) bool { a := q.paths[p]; return intents[p] || a != nil && a.real }
	var recs []*Record
	var roots []oldRoot
	for _, r := range q.carried {
		o, whole := r.Path, false
		for p := o; ; p = parentDir(p) {
			if whole = named(p); whole || p == "" {
				break
			}
		}
		if whole {
			recs, roots = append(recs, r), append(roots, oldRoot{o, r})
			continue
		}
		found := make(map[string]bool)
		for j := sort.SearchStrings(keys, o+"/"); j < len(keys) && strings.HasPrefix(keys[j], o+"/"); j++ {
			found[keys[j]] = named(keys[j])
		}
		for p := range intents {
			found[p] = found[p] || beneath(p, o)
		}
		n := len(roots)
		for p, ok := range found {
			if ok {
				roots = append(roots, oldRoot{p, r})
			}
		}
		if len(roots) > n {
			recs = append(recs, r)
		}
	}
	return recs, roots
}

// fullMappingBudget is how many old names the full mapping may add to an
// answer of n paths before the rule takes over: small enough that an
// answer stays within the e2e storm's bound of 4 x (entries + operations).
// (A variable: the rule's tests set it to -1.)
var fullMappingBudget = func(n int) int { return n + 10_000 }

// The full mapping (docs/design.md, "Old names"): for every rename,
// newest first, each listed path beneath the new name (not one that an
// earlier answer derived) once more beneath the old name, the added paths
// taking part in the older renames. An exchange maps both ways. It gives
// up, adding nothing, once it would add more than budget paths.
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
