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
// are applied newest first, so that chains (O → N → M) map M/x to N/x and
// then to O/x.
func addOldNames(paths map[string]*agg, renames []*Record, add func(p string, r *Record)) {
	if len(renames) == 0 {
		return
	}
	// Exchanges map both ways, so one pass is not closed: repeat until
	// nothing new appears, so that the next query, which starts from this
	// answer's recorded paths, derives nothing more.
	keys := sortedKeys(paths)
	for round := 0; round <= 2*len(renames); round++ {
		added := false
		for i := len(renames) - 1; i >= 0; i-- {
			r := renames[i]
			pairs := [][2]string{{r.Path2, r.Path}} // from the new name back to the old
			if r.Flags&FlagExchange != 0 {
				pairs = append(pairs, [2]string{r.Path, r.Path2})
			}
			for _, pr := range pairs {
				from, to := pr[0], pr[1]
				if from == "" || to == "" {
					continue
				}
				prefix := from + "/"
				j := sort.SearchStrings(keys, prefix)
				for ; j < len(keys) && strings.HasPrefix(keys[j], prefix); j++ {
					p := to + keys[j][len(from):]
					if _, ok := paths[p]; !ok {
						add(p, r)
						added = true
					}
				}
			}
			if added {
				keys = sortedKeys(paths)
			}
		}
		if !added {
			return
		}
	}
}

func sortedKeys(m map[string]*agg) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
