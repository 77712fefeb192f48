package checkpoint

import (
	"sort"
	"strings"
)

// addOldNames lists, for every directory rename, each listed path beneath
// the new name once more beneath the old name.
//
// rsync with --files-from neither recurses nor deletes beneath a
// directory that still exists. When directory O is renamed to N, the
// copy still holds O/x; if O is then created again (or, with an exchange,
// holds the other directory), rsync keeps the stale O/x unless O/x itself
// is listed, and --delete-missing-args then deletes it. Every x that can
// be stale in the copy under O is now beneath N (listed by the expansion
// of N) or was changed beneath N afterwards (listed by its own record),
// so mapping the listed paths beneath N back to O covers them. Renames
// are applied newest first, in one pass, so that chains (O → N → M) map
// M/x to N/x and then to O/x; an exchange maps both ways in one step.
//
// The sources are the paths that records of modifications name and the
// paths found beneath renamed directories, never paths that an earlier
// answer derived (recorded with FlagDerived): those were mapped when they
// were derived, and mapping them again would make every answer longer
// than the one before when renames chain into each other's names.
// Renames of a name onto its own ancestor or descendant are skipped: they
// always fail (EINVAL, ENOTEMPTY), so they moved nothing.
func addOldNames(paths map[string]*agg, renames []*Record, add func(p string, r *Record)) {
	if len(renames) == 0 {
		return
	}
	var keys []string
	for k, a := range paths {
		if !a.recorded || a.real {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for i := len(renames) - 1; i >= 0; i-- {
		r := renames[i]
		if r.Path == "" || r.Path2 == "" || r.Path == r.Path2 || beneath(r.Path, r.Path2) || beneath(r.Path2, r.Path) {
			continue
		}
		pairs := [][2]string{{r.Path2, r.Path}} // from the new name back to the old
		if r.Flags&FlagExchange != 0 {
			pairs = append(pairs, [2]string{r.Path, r.Path2})
		}
		var added []string
		for _, pr := range pairs {
			from, to := pr[0], pr[1]
			prefix := from + "/"
			j := sort.SearchStrings(keys, prefix)
			for ; j < len(keys) && strings.HasPrefix(keys[j], prefix); j++ {
				p := to + keys[j][len(from):]
				if _, ok := paths[p]; !ok {
					add(p, r)
					added = append(added, p)
				}
			}
		}
		if len(added) > 0 {
			// Older renames map these too (chains).
			keys = append(keys, added...)
			sort.Strings(keys)
		}
	}
}

// beneath reports whether p is strictly beneath the directory dir (both
// not empty).
func beneath(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && strings.HasPrefix(p, dir)
}
