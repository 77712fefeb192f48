package checkpoint

import (
	"fmt"
	"slices"
	"strings"
)

// Every name of a file with several links.
//
// The contract's rsync has no -H: it copies each name on its own. A
// modification of a file with links h1 and h2, made through h1, changes
// what the copy must hold at h2 too, so the answer lists every name that
// the modified inode has in BACKING when the query runs.
//
// The names come from an index of the inodes with more than one link
// (linkIndex), which a walk of BACKING builds at the first query that
// needs it, and from the link and rename records of the answer's periods.
// Every name is checked with an lstat before it is listed (the index may
// be stale: a name renamed or removed since), and when fewer names check
// out than the inode has links, the query walks BACKING again (at most
// once): the names that were made outside the mount, or moved with a
// directory, are found that way.
//
// An inode is looked for when an answered path whose content or
// attributes were modified (inodeOps) holds it now with more than one
// link, or when a record of such a path modified it and the path holds
// something else now (written through h1, then h1 removed: the
// change lives on at h2). In the second case the link count is unknown;
// the inode is looked for only if the index or a record of a link knows
// it to have had several links. An inode that was linked outside the
// mount after the index was built, and then removed from the answered
// name, is the one case left out (the outside-changes limit, in
// docs/usage.md).

// InodeWalker is an optional Backing method: every entry that is not a
// directory, with its inode number and link count. Without it the
// tracker walks with Walk and Lstat.
type InodeWalker interface {
	WalkInodes(fn func(path string, ino uint64, nlink uint32)) error
}

// linkIndex maps inodes with several links to the names they were last
// seen under. It is guarded by qmu (only queries use it).
type linkIndex struct {
	built bool
	fresh bool // built by the query that runs now
	names map[uint64][]string
}

// inodeOps are the modifications of an inode's content or attributes,
// which every name shows; the other ops change names only (entries: after
// a crash, a directory's entries stand for whatever may have been lost).
// A link is among them: FUSE gives the existing file as an inode, and
// the name that hsmfs records for it may be another of its names, so the
// name that the caller used is listed this way.
const inodeOps = 1<<OpWrite | 1<<OpTruncate | 1<<OpFallocate | 1<<OpCopyRange | 1<<OpChmod |
	1<<OpChown | 1<<OpUtimens | 1<<OpSetxattr | 1<<OpRemovexattr | 1<<OpEntries | 1<<OpLink

// linkWant is one inode whose names a query looks for.
type linkWant struct {
	nlink uint32 // 0: unknown (no answered path holds it now)
	src   int    // the entry that wanted it (its ops and period)
}

// addLinkNames adds to the answer every other name of the inodes that its
// entries modified. hinted holds the names that link and rename records
// of the answer's periods gave each inode. aggs[i] is the agg of
// ans.Entries[i], and both stay parallel and sorted.
func (t *Tracker) addLinkNames(ans *Answer, aggs []*agg, hinted map[uint64][]string) ([]*agg, error) {
	wants := t.linkWants(ans, aggs, hinted)
	if len(wants) == 0 {
		return aggs, nil
	}
	if !t.links.built {
		if err := t.buildLinkIndex(wants); err != nil {
			return nil, err
		}
	}
	found, short := t.linkNames(wants, hinted)
	if short && !t.links.fresh {
		if err := t.buildLinkIndex(wants); err != nil {
			return nil, err
		}
		found, _ = t.linkNames(wants, hinted)
	}
	t.links.fresh = false
	listed := make(map[string]bool, len(ans.Entries))
	for i := range ans.Entries {
		listed[ans.Entries[i].Path] = true
	}
	n := len(ans.Entries)
	for ino, names := range found {
		src := wants[ino].src
		for _, nm := range names {
			if listed[nm.path] {
				continue
			}
			listed[nm.path] = true
			sa := aggs[src]
			a := &agg{ops: sa.ops, period: sa.period, ino: ino, inos: []uint64{ino}}
			e := ans.Entries[src]
			ans.Entries = append(ans.Entries, Entry{Path: nm.path, Type: nm.typ.String(), Ops: e.Ops,
				Period: e.Period, Ino: ino, Nlink: nm.nlink, Inos: a.inos})
			aggs = append(aggs, a)
		}
	}
	if len(ans.Entries) > n {
		sortEntries(ans.Entries, aggs)
	}
	return aggs, nil
}

// linkWants lists the inodes whose other names the answer needs.
func (t *Tracker) linkWants(ans *Answer, aggs []*agg, hinted map[uint64][]string) map[uint64]linkWant {
	wants := make(map[uint64]linkWant)
	for i := range ans.Entries {
		e, a := &ans.Entries[i], aggs[i]
		if e.shadowed || a.ops&inodeOps == 0 {
			continue
		}
		if a.nowNlink > 1 && e.Type != "dir" {
			wants[a.nowIno] = linkWant{nlink: a.nowNlink, src: i}
		}
		for _, ino := range a.inos {
			if ino == a.nowIno {
				continue
			}
			if _, ok := wants[ino]; ok {
				continue
			}
			_, indexed := t.links.names[ino]
			if indexed || hinted[ino] != nil || !t.links.built {
				wants[ino] = linkWant{src: i}
			}
		}
	}
	return wants
}

type linkName struct {
	path  string
	typ   FileType
	nlink uint32
}

// linkNames checks the known names of each wanted inode with an lstat,
// and reports whether some inode has fewer names than links (the index
// missed one). The index keeps the names that checked out.
func (t *Tracker) linkNames(wants map[uint64]linkWant, hinted map[uint64][]string) (map[uint64][]linkName, bool) {
	found := make(map[uint64][]linkName)
	short := false
	for ino, w := range wants {
		var names []linkName
		nlink := w.nlink
		for _, p := range append(slices.Clone(t.links.names[ino]), hinted[ino]...) {
			if slices.ContainsFunc(names, func(n linkName) bool { return n.path == p }) {
				continue
			}
			typ, i, nl := t.backing.Lstat(p)
			if i != ino || typ == TypeDir || !typ.exists() {
				continue
			}
			names = append(names, linkName{p, typ, nl})
			nlink = nl
		}
		if uint32(len(names)) < nlink {
			short = true
		}
		if len(names) == 0 && t.links.names[ino] != nil {
			short = true // known to have had links; moved out of sight?
		}
		if len(names) > 0 {
			found[ino] = names
			paths := make([]string, len(names))
			for k, n := range names {
				paths[k] = n.path
			}
			t.links.names[ino] = paths
		} else {
			delete(t.links.names, ino)
		}
	}
	return found, short
}

// buildLinkIndex walks BACKING for every inode with several links, and
// for the names of the wanted inodes, whatever their link count now (the
// name that had the other link may be gone).
func (t *Tracker) buildLinkIndex(wants map[uint64]linkWant) error {
	names := make(map[uint64][]string)
	add := func(p string, ino uint64, nlink uint32) {
		if _, ok := wants[ino]; ok || nlink > 1 {
			names[ino] = append(names[ino], p)
		}
	}
	var err error
	if iw, ok := t.backing.(InodeWalker); ok {
		err = iw.WalkInodes(add)
	} else {
		err = t.backing.Walk("", func(p string) {
			if typ, ino, nlink := t.backing.Lstat(p); typ != TypeDir && typ.exists() {
				add(p, ino, nlink)
			}
		})
	}
	if err != nil {
		return fmt.Errorf("index hard links: %w", err)
	}
	t.links = linkIndex{built: true, fresh: true, names: names}
	t.log.Info("query: indexed the files with several links", "inodes", len(names))
	return nil
}

// sortEntries sorts the entries by path, and aggs with them.
func sortEntries(es []Entry, aggs []*agg) {
	idx := make([]int, len(es))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return strings.Compare(es[x].Path, es[y].Path) })
	se, sa := make([]Entry, len(es)), make([]*agg, len(es))
	for k, i := range idx {
		se[k], sa[k] = es[i], aggs[i]
	}
	copy(es, se)
	copy(aggs, sa)
}
