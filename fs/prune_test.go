package fs_test

import (
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	hfs "github.com/hsmfs/hsmfs/fs"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// TestNodeBudget: with a budget of 200 nodes, 1,100 names made through
// the mount leave the kernel (and go-fuse's tree) holding about 200, the
// newest kept and the oldest forgotten; what is in use (an open file, an
// open directory) keeps working through its fd; every name reads as
// BACKING holds it, and the answer lists every one. Run with
// FUSE_NOTIFY_PRUNE, and with entries invalidated one by one as on a
// kernel without it (which leaves directories and open files alone, and
// cannot drop a hard link's older names: 40 here).
func TestNodeBudget(t *testing.T) {
	for _, entries := range []bool{false, true} {
		t.Run(fmt.Sprintf("entries=%v", entries), func(t *testing.T) {
			hfs.SetEntryPrune(entries)
			defer hfs.SetEntryPrune(false)
			const budget = 200
			m := mountWith(t, func(c *hfs.Config) { c.MaxNodes = budget })
			must(t, os.Mkdir(m.path("keep"), 0o755))
			dirfd, err := unix.Open(m.path("keep"), unix.O_DIRECTORY|unix.O_RDONLY, 0)
			must(t, err)
			defer unix.Close(dirfd)
			held, err := os.OpenFile(m.path("keep/w"), os.O_CREATE|os.O_WRONLY, 0o644)
			must(t, err)
			defer held.Close()

			want := map[string]bool{"keep": true, "keep/w": true}
			must(t, os.Mkdir(m.path("links"), 0o755))
			for d := 0; d < 10; d++ {
				dir := fmt.Sprintf("d%02d", d)
				must(t, os.Mkdir(m.path(dir), 0o755))
				want[dir] = true
				for i := 0; i < 100; i++ {
					p := fmt.Sprintf("%s/f%03d", dir, i)
					must(t, os.WriteFile(m.path(p), []byte(p), 0o644))
					want[p] = true
					if i%25 == 0 {
						l := fmt.Sprintf("links/%s-%d", dir, i)
						must(t, os.Link(m.path(p), m.path(l)))
						want[l] = true
					}
				}
			}
			st := waitNodes(t, m, budget)
			if st.NodesPruned == 0 {
				t.Fatalf("no node pruned: %+v", st)
			}
			if !entries && m.srv.PrunesByEntries() {
				t.Skip("this kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18): the other subtest covers it")
			}
			tree := m.srv.TreeNodes()
			t.Logf("after 1,100 names: %d nodes held, %d in go-fuse's tree, %d named to the kernel", st.Nodes, tree, st.NodesPruned)
			if st.Nodes < budget/2 || tree > budget+10 {
				t.Errorf("%d nodes held, %d in go-fuse's tree: want the budget's %d, the newest kept", st.Nodes, tree, budget)
			}
			if !m.srv.Cached("d09/f099") || m.srv.Cached("d00/f001") {
				t.Errorf("the newest name cached: %v, the oldest: %v; want the oldest forgotten first", m.srv.Cached("d09/f099"), m.srv.Cached("d00/f001"))
			}

			// Listing names that the kernel holds adds no node: the
			// second and third listings of the newest directory look
			// up every name again (readdirplus), and find them cached.
			list := func() int {
				ents, err := os.ReadDir(m.path("d09"))
				must(t, err)
				for _, e := range ents {
					var st unix.Stat_t
					must(t, unix.Lstat(m.path("d09/"+e.Name()), &st))
				}
				c, err := hsmctl.Open(m.mnt, "")
				must(t, err)
				st, _, err := c.Status()
				must(t, err)
				return st.Nodes
			}
			list()
			if before, after := list(), list(); after > before+5 {
				t.Errorf("listing a directory of cached names took the nodes held from %d to %d", before, after)
			}

			// What is held open still works, by its fd.
			_, err = held.WriteString("written")
			must(t, err)
			must(t, unix.Renameat(dirfd, "w", dirfd, "w2"))
			var s unix.Stat_t
			must(t, unix.Fstatat(dirfd, "w2", &s, unix.AT_SYMLINK_NOFOLLOW))
			if s.Size != int64(len("written")) {
				t.Errorf("keep/w2 through the held directory: size %d, want %d", s.Size, len("written"))
			}
			delete(want, "keep/w")
			want["keep/w2"] = true
			// A pruned name is looked up again: a rename and a change of
			// what the kernel forgot.
			must(t, os.Rename(m.path("d00/f000"), m.path("d01/moved")))
			must(t, os.WriteFile(m.path("d02/f001"), []byte("again"), 0o644))
			delete(want, "d00/f000")
			want["d01/moved"] = true

			mnt := snapshot(t, m.mnt)
			maps.DeleteFunc(mnt, func(p string, _ string) bool { return p == ".hsm" || strings.HasPrefix(p, ".hsm/") })
			if back := snapshot(t, m.back); !maps.Equal(mnt, back) {
				t.Errorf("the mount and BACKING differ: %d and %d paths", len(mnt), len(back))
			}
			got := m.query(t)
			for p := range want {
				if _, ok := got[p]; !ok {
					t.Errorf("the answer lacks %s", p)
				}
			}
			if _, ok := got["d00/f000"]; !ok {
				t.Errorf("the answer lacks the moved name's old name d00/f000")
			}
		})
	}
}

// waitNodes waits until the mount's status counts at most max nodes, and
// returns it.
func waitNodes(t *testing.T, m *mounted, max int) *hsmctl.Status {
	t.Helper()
	c, err := hsmctl.Open(m.mnt, "")
	must(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _, err := c.Status()
		must(t, err)
		if st.Nodes <= max {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d nodes held 10 s after the names were made (budget %d, %d pruned)", st.Nodes, max, st.NodesPruned)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
