package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// hsmTier is an archive tier that a test mounts with: its URL, and how
// many object reads it served (the S3 server counts them; a directory
// cannot, so gets is nil there).
type hsmTier struct {
	url     string
	objects func() []string // the objects it holds
	gets    *atomic.Int64
	stop    func() // makes it unreachable
}

// dirTier is a directory tier in the test's temporary directory.
func dirTier(t *testing.T) *hsmTier {
	dir := filepath.Join(t.TempDir(), "tier")
	must(t, os.Mkdir(dir, 0o700))
	return &hsmTier{
		url: "dir://" + dir,
		objects: func() []string {
			ents, _ := os.ReadDir(dir)
			var out []string
			for _, e := range ents {
				if !strings.HasPrefix(e.Name(), ".") {
					out = append(out, e.Name())
				}
			}
			return out
		},
		stop: func() { os.Rename(dir, dir+".gone") },
	}
}

// s3Tier is an S3 server in the test's process (gofakes3), which the
// daemon reaches over HTTP with credentials from its environment.
func s3Tier(t *testing.T) *hsmTier {
	backend := s3mem.New()
	must(t, backend.CreateBucket("hsm"))
	inner := gofakes3.New(backend).Server()
	tr := &hsmTier{gets: new(atomic.Int64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/hsm/pre/") {
			tr.gets.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAHSMFSE2E")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "hsmfs-e2e-secret")
	tr.url = "s3://hsm/pre?endpoint=" + srv.URL
	tr.objects = func() []string {
		res, err := backend.ListBucket("hsm", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range res.Contents {
			out = append(out, c.Key)
		}
		return out
	}
	tr.stop = srv.Close
	return tr
}

// hsmState is `hsmfs hsm state --json` of one file.
type hsmState struct {
	States []string `json:"states"`
	Tier   uint32   `json:"tier"`
	Object string   `json:"object"`
	Size   int64    `json:"size"`
}

func stateOf(t *testing.T, path string) hsmState {
	t.Helper()
	r := hsm(t, "hsm", "state", "--json", path)
	if r.code != 0 {
		t.Fatalf("hsm state %s: %v", path, r)
	}
	var st hsmState
	must(t, json.Unmarshal([]byte(r.stdout), &st))
	return st
}

func wantStates(t *testing.T, path string, want string) {
	t.Helper()
	if got := strings.Join(stateOf(t, path).States, " "); got != want {
		t.Fatalf("%s: states %q, want %q", filepath.Base(path), got, want)
	}
}

func hsmOK(t *testing.T, args ...string) {
	t.Helper()
	if r := hsm(t, append([]string{"hsm"}, args...)...); r.code != 0 {
		t.Fatalf("hsmfs hsm %s: %v", strings.Join(args, " "), r)
	}
}

// hsmRefused runs an hsm command that must fail with why on stderr.
func hsmRefused(t *testing.T, why string, args ...string) {
	t.Helper()
	r := hsm(t, append([]string{"hsm"}, args...)...)
	if r.code != 1 || !strings.Contains(r.stderr, why) {
		t.Fatalf("hsmfs hsm %s: %v; want exit 1 saying %q", strings.Join(args, " "), r, why)
	}
}

func blocksOf(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Stat(p, &st))
	return st.Blocks
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func mustRead(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes read differ from the %d written", p, len(got), len(want))
	}
}

// TestHSM: archive, release, restore on open, dirty, and the rules
// around them, on a directory tier and on S3.
func TestHSM(t *testing.T) {
	for _, kind := range []string{"dir", "s3"} {
		t.Run(kind, func(t *testing.T) {
			tr := dirTier(t)
			if kind == "s3" {
				tr = s3Tier(t)
			}
			testHSM(t, tr)
		})
	}
}

func testHSM(t *testing.T, tr *hsmTier) {
	addr := freeAddr(t)
	m := mount(t, withArgs("--restore-timeout", "4s", "--metrics", addr))
	if r := hsm(t, "tier", "add", m.Mnt, "1", tr.url); r.code != 0 {
		t.Fatalf("tier add: %v", r)
	}
	if r := hsm(t, "tier", "list", m.Mnt); !strings.Contains(r.stdout, "1\t"+tr.url) {
		t.Fatalf("tier list: %v", r)
	}
	p := func(name string) string { return filepath.Join(m.Mnt, name) }
	big, small := randomBytes(6<<20+333), randomBytes(100)
	must(t, os.WriteFile(p("big"), big, 0o640))
	must(t, os.WriteFile(p("small"), small, 0o644))
	must(t, os.Link(p("big"), p("link")))
	must(t, syscall.Setxattr(p("big"), "user.k", []byte("v"), 0))
	var before syscall.Stat_t
	must(t, syscall.Stat(p("big"), &before))
	wantStates(t, p("big"), "exists")
	query(t, m.Mnt)
	must(t, ctl(m.Mnt, "bless"))

	hsmOK(t, "archive", p("big"), p("small"))
	wantStates(t, p("link"), "archived") // one inode, one state
	if n := len(tr.objects()); n != 2 {
		t.Fatalf("tier holds %d objects after two archives: %v", n, tr.objects())
	}
	// Release: refused while open, then the blocks go and the rest stays.
	f, err := os.Open(p("big"))
	must(t, err)
	hsmRefused(t, "open", "release", p("big"))
	f.Close()
	hsmOK(t, "release", p("big"))
	wantStates(t, p("big"), "archived released")
	if b := blocksOf(t, filepath.Join(m.Backing, "big")); b > 8 {
		t.Fatalf("released file still has %d blocks in BACKING", b)
	}
	gets := func() int64 {
		if tr.gets == nil {
			return 0
		}
		return tr.gets.Load()
	}
	g0 := gets()
	var after syscall.Stat_t
	must(t, syscall.Stat(p("big"), &after))
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Nlink != 2 || after.Mode != before.Mode {
		t.Fatalf("released: size %d mtime %v nlink %d mode %o; was %d %v 2 %o", after.Size, after.Mtim, after.Nlink, after.Mode, before.Size, before.Mtim, before.Mode)
	}
	if v := make([]byte, 8); true {
		n, err := syscall.Getxattr(p("link"), "user.k", v)
		if err != nil || string(v[:n]) != "v" {
			t.Fatalf("xattr after release: %q, %v", v[:n], err)
		}
	}
	if r := runIn(t, m.Mnt, nil, "sh", "-c", "ls -l >/dev/null && du -s . >/dev/null && stat big >/dev/null"); r.code != 0 {
		t.Fatalf("ls, du, stat: %v", r)
	}
	wantStates(t, p("big"), "archived released")
	if gets() != g0 {
		t.Fatalf("stat, ls or du read the tier: %d gets", gets()-g0)
	}
	// Release and restore are not modifications.
	if a := query(t, m.Mnt); len(a.Entries) != 0 {
		t.Fatalf("archive and release were answered as changes: %v", a.Paths())
	}
	// Opens at once: one fetch, all see the content.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(p("link"))
			if err != nil || !bytes.Equal(got, big) {
				t.Errorf("read of a released file: %d bytes, %v", len(got), err)
			}
		}()
	}
	wg.Wait()
	if tr.gets != nil && gets()-g0 != 1 {
		t.Errorf("4 opens of a released file made %d object reads, want 1", gets()-g0)
	}
	wantStates(t, p("big"), "archived")
	if b := blocksOf(t, filepath.Join(m.Backing, "big")); b < int64(len(big))/512 {
		t.Fatalf("restored file has %d blocks in BACKING", b)
	}
	if a := query(t, m.Mnt); len(a.Entries) != 0 {
		t.Fatalf("the restore was answered as a change: %v", a.Paths())
	}
	must(t, ctl(m.Mnt, "bless"))
	fams := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hsmfs_hsm_files", []string{"state", "archived"}, 2},
		{"hsmfs_hsm_files", []string{"state", "released"}, 0},
		{"hsmfs_hsm_transitions_total", []string{"op", "archive", "tier", "1", "result", "ok"}, 2},
		{"hsmfs_hsm_transitions_total", []string{"op", "release", "tier", "1", "result", "ok"}, 1},
		{"hsmfs_hsm_transitions_total", []string{"op", "restore", "tier", "1", "result", "ok"}, 1},
		{"hsmfs_hsm_transfer_bytes_total", []string{"op", "restore", "tier", "1", "result", "ok"}, float64(len(big))},
	} {
		if got := metricValue(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// A write makes it dirty; dirty is never released.
	af, err := os.OpenFile(p("small"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	af.Write([]byte("more"))
	af.Close()
	small = append(small, "more"...)
	wantStates(t, p("small"), "archived dirty")
	hsmRefused(t, "dirty", "release", p("small"))

	// O_TRUNC: nothing is restored, and the new content is the file's.
	hsmOK(t, "release", p("big"))
	g1 := gets()
	must(t, os.WriteFile(p("big"), []byte("new"), 0o640))
	if gets() != g1 {
		t.Fatalf("an O_TRUNC open read the tier")
	}
	mustRead(t, p("link"), []byte("new"))
	wantStates(t, p("big"), "archived dirty")

	// remove: refused while released; after a restore it drops the copy.
	hsmOK(t, "archive", p("small"))
	wantStates(t, p("small"), "archived")
	hsmOK(t, "release", p("small"))
	hsmRefused(t, "released", "remove", p("small"))
	hsmOK(t, "restore", p("small"))
	mustRead(t, filepath.Join(m.Backing, "small"), small)
	hsmOK(t, "remove", p("small"))
	wantStates(t, p("small"), "exists")
	hsmOK(t, "set", "norelease", p("small"))
	hsmOK(t, "archive", p("small"))
	hsmRefused(t, "norelease", "release", p("small"))
	// A deleted file's archive is collected.
	n := len(tr.objects())
	must(t, os.Remove(p("small")))
	for deadline := time.Now().Add(10 * time.Second); len(tr.objects()) != n-1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the archive of a deleted file stays: %d objects, want %d", len(tr.objects()), n-1)
		}
	}

	// Across a remount a released file stays restorable.
	keep := randomBytes(1<<20 + 5)
	must(t, os.WriteFile(p("keep"), keep, 0o600))
	hsmOK(t, "archive", p("keep"))
	hsmOK(t, "release", p("keep"))
	query(t, m.Mnt)
	must(t, ctl(m.Mnt, "bless"))
	m.unmount(t)
	m = mount(t, withBacking(m.Backing), withJournal(m.Journal), withMnt(m.Mnt), withArgs("--restore-timeout", "4s"))
	wantStates(t, p("keep"), "archived released")
	mustRead(t, p("keep"), keep)
	if a := query(t, m.Mnt); a.Get("keep") != nil {
		t.Fatalf("a restore after the remount was answered as a change: %+v", a.Get("keep"))
	}

	// A tier that cannot be reached: the open fails with EIO, never
	// with wrong data.
	hsmOK(t, "release", p("keep"))
	tr.stop()
	start := time.Now()
	_, err = os.ReadFile(p("keep"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a released file with its tier gone: %v, want EIO", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the failing open took %v (restore timeout 4s)", d)
	}
	if st := stateOf(t, p("keep")); !strings.Contains(strings.Join(st.States, " "), "released") {
		t.Fatalf("after a failed restore: %v, want still released", st.States)
	}
}

// releasedFiles adds a directory tier to m and makes n files of random
// content in d/, archived and released. It returns their content by
// name (relative to the mount) and their paths.
func releasedFiles(t *testing.T, m *hsmMount, n int) (want map[string][]byte, paths []string) {
	t.Helper()
	tr := dirTier(t)
	if r := hsm(t, "tier", "add", m.Mnt, "1", tr.url); r.code != 0 {
		t.Fatalf("tier add: %v", r)
	}
	want = map[string][]byte{}
	must(t, os.Mkdir(filepath.Join(m.Mnt, "d"), 0o755))
	for i := range n {
		name := fmt.Sprintf("d/f%02d", i)
		want[name] = randomBytes(1<<15 + i*4099)
		must(t, os.WriteFile(filepath.Join(m.Mnt, name), want[name], 0o644))
		paths = append(paths, filepath.Join(m.Mnt, name))
	}
	hsmOK(t, append([]string{"archive"}, paths...)...)
	hsmOK(t, append([]string{"release"}, paths...)...)
	return want, paths
}

// TestHSMSyncRestoresNothing: hsmfs sync over released files restores
// none of them (no recall storm), and the mirror is exact.
func TestHSMSyncRestoresNothing(t *testing.T) {
	m := mount(t)
	want, paths := releasedFiles(t, m, 20)
	dest := filepath.Join(t.TempDir(), "mirror")
	check := func(round string) {
		t.Helper()
		if r := hsm(t, "sync", m.Mnt, dest); r.code != 0 {
			t.Fatalf("%s: hsmfs sync: %v", round, r)
		}
		for name, data := range want {
			mustRead(t, filepath.Join(dest, name), data)
		}
		released := 0
		for _, p := range paths {
			if slices.Contains(stateOf(t, p).States, "released") {
				released++
			}
		}
		if round == "first" && released != len(paths) || round == "second" && released != len(paths)-1 {
			t.Fatalf("%s sync: %d of %d files still released", round, released, len(paths))
		}
	}
	check("first") // the first sync copies the whole tree
	// A change: that file is restored by its own write, the rest stay.
	name := "d/f07"
	want[name] = append(want[name], "more"...)
	f, err := os.OpenFile(filepath.Join(m.Mnt, name), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte("more"))
	f.Close()
	check("second")
}

// TestHSMRun: the policy daemon archives what the change feed lists once
// it is old enough, and releases least recently opened first until a
// small file system is below its low mark.
func TestHSMRun(t *testing.T) {
	bfs := newLoopFS(t, "ext4", 64<<20)
	b := filepath.Join(bfs.mp, "backing")
	must(t, os.Mkdir(b, 0o755))
	m := mount(t, withBacking(b))
	tr := dirTier(t)
	if r := hsm(t, "tier", "add", m.Mnt, "1", tr.url); r.code != 0 {
		t.Fatalf("tier add: %v", r)
	}
	want := map[string][]byte{}
	var order []string
	for i := range 11 {
		name := fmt.Sprintf("f%02d", i)
		want[name] = randomBytes(4 << 20)
		must(t, os.WriteFile(filepath.Join(m.Mnt, name), want[name], 0o644))
	}
	must(t, os.WriteFile(filepath.Join(m.Mnt, "tiny"), []byte("small"), 0o644))
	state := filepath.Join(t.TempDir(), "hsm-run.json")
	run := func(args ...string) string {
		t.Helper()
		r := hsm(t, append(append([]string{"hsm", "run", "--once", "--state", state, "--min-size", "1M"}, args...), m.Mnt)...)
		if r.code != 0 {
			t.Fatalf("hsm run %v: %v", args, r)
		}
		t.Logf("hsm run %v: %s", args, strings.TrimSpace(r.stdout))
		return r.stdout
	}
	// Too young: nothing archived, every file kept as a candidate.
	if out := run("--archive-after", "1h", "--release-above", "0"); !strings.Contains(out, "archived 0 ") {
		t.Fatalf("files changed a moment ago were archived: %s", out)
	}
	// Opened in a known order: f10 is the least recently opened.
	for i := 10; i >= 0; i-- {
		name := fmt.Sprintf("f%02d", i)
		mustRead(t, filepath.Join(m.Mnt, name), want[name])
		order = append(order, name)
	}
	used := func() float64 {
		var s syscall.Statfs_t
		must(t, syscall.Statfs(m.Mnt, &s))
		return 100 * float64(s.Blocks-s.Bfree) / float64(s.Blocks-s.Bfree+s.Bavail)
	}
	if u := used(); u < 70 {
		t.Fatalf("the file system is only %.0f%% used; the test needs more than 70%%", u)
	}
	run("--archive-after", "0s", "--release-above", "70%", "--release-to", "40%")
	if u := used(); u > 40 {
		t.Fatalf("after hsm run the file system is %.0f%% used, want at most 40%%", u)
	}
	var released []string
	for _, name := range order {
		st := stateOf(t, filepath.Join(m.Mnt, name))
		if !slices.Contains(st.States, "archived") {
			t.Errorf("%s was not archived: %v", name, st.States)
		}
		if slices.Contains(st.States, "released") {
			released = append(released, name)
		}
	}
	if len(released) == 0 || !slices.Equal(released, order[:len(released)]) {
		t.Fatalf("released %v; want the least recently opened first, in the order %v", released, order)
	}
	if st := stateOf(t, filepath.Join(m.Mnt, "tiny")); !slices.Equal(st.States, []string{"exists"}) {
		t.Fatalf("a file under --min-size was archived: %v", st.States)
	}
	for name, data := range want {
		mustRead(t, filepath.Join(m.Mnt, name), data)
	}
}

// TestHSMOtherFileSystem: a file on a file system mounted inside BACKING
// has no HSM state (inode numbers say which file is which only within one
// file system): archive is refused with a reason.
func TestHSMOtherFileSystem(t *testing.T) {
	b, mnt, j := newDirs(t)
	sub := filepath.Join(b, "sub")
	must(t, os.Mkdir(sub, 0o755))
	if err := syscall.Mount("none", sub, "tmpfs", 0, ""); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
	m := mount(t, withBacking(b), withMnt(mnt), withJournal(j))
	if r := hsm(t, "tier", "add", m.Mnt, "1", dirTier(t).url); r.code != 0 {
		t.Fatalf("tier add: %v", r)
	}
	must(t, os.WriteFile(filepath.Join(m.Mnt, "sub", "x"), []byte("on tmpfs"), 0o644))
	hsmRefused(t, "on a file system mounted inside BACKING", "archive", filepath.Join(m.Mnt, "sub", "x"))
	wantStates(t, filepath.Join(m.Mnt, "sub", "x"), "exists")
}
