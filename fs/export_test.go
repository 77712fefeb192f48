package fs

import (
	"strings"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// SetEntryPrune makes the node budget of mounts made from now on
// invalidate entries, as on a kernel without FUSE_NOTIFY_PRUNE.
func SetEntryPrune(on bool) { entryPrune.Store(on) }

// PrunesByEntries reports whether the node budget invalidates entries
// (no FUSE_NOTIFY_PRUNE).
func (s *Server) PrunesByEntries() bool { return s.prune.entries.Load() }

// TreeNodes counts the nodes in go-fuse's tree beneath the root (a node
// with several names once), the control directory's left out.
func (s *Server) TreeNodes() int {
	seen := make(map[*gofs.Inode]bool)
	var walk func(in *gofs.Inode)
	walk = func(in *gofs.Inode) {
		for name, ch := range in.Children() {
			if in == s.prune.root && name == ".hsm" || seen[ch] {
				continue
			}
			seen[ch] = true
			walk(ch)
		}
	}
	walk(s.prune.root)
	return len(seen)
}

// Cached reports whether go-fuse's tree holds a node at rel.
func (s *Server) Cached(rel string) bool {
	in := s.prune.root
	for _, name := range strings.Split(rel, "/") {
		if in = in.GetChild(name); in == nil {
			return false
		}
	}
	return true
}
