package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestHSMCrash: writers archive, release, restore, read and rewrite many
// files while the daemon is SIGKILLed at random moments. After each
// recovery every file holds exactly a content that the test wrote (the
// last one, or the one being written when the crash came), and every
// archived file's object is in the tier.
func TestHSMCrash(t *testing.T) {
	base := t.TempDir()
	tierDir := filepath.Join(base, "tier")
	must(t, os.Mkdir(tierDir, 0o700))
	b, mnt, j := newDirs(t)
	h := newHSMCrash(t, b, mnt, tierDir, func() *hsmMount {
		return mount(t, withBacking(b), withMnt(mnt), withJournal(j))
	})
	h.run(crashCount(t, "HSMFS_HSM_CRASHES", 6, 40), func() {
		h.m.unmounted = true
		must(t, syscall.Kill(h.m.Pid, syscall.SIGKILL))
		waitDead(t, h.m.Pid)
	}, func() { forceUnmount(t, mnt, 0) })
}

// TestHSMCrashPower: the same with power cuts: BACKING, JOURNAL and the
// directory tier on three XFS filesystems that stop at once without
// flushing (xfs_io -x -c shutdown), as a power cut would.
func TestHSMCrashPower(t *testing.T) {
	bfs := newLoopFS(t, "xfs", 320<<20)
	jfs := newLoopFS(t, "xfs", 320<<20)
	tfs := newLoopFS(t, "xfs", 320<<20)
	b, j, tierDir := filepath.Join(bfs.mp, "backing"), filepath.Join(jfs.mp, "journal"), filepath.Join(tfs.mp, "tier")
	must(t, os.Mkdir(b, 0o755))
	must(t, os.Mkdir(tierDir, 0o700))
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	logf := filepath.Join(t.TempDir(), "hsmfs.log")
	h := newHSMCrash(t, b, mnt, tierDir, func() *hsmMount {
		return mount(t, withBacking(b), withMnt(mnt), withJournal(j), withArgs("--log", logf))
	})
	h.run(crashCount(t, "HSMFS_HSM_POWERCUTS", 3, 20), func() {
		h.m.unmounted = true
		all := []*loopFS{bfs, jfs, tfs}
		rand.Shuffle(len(all), func(i, k int) { all[i], all[k] = all[k], all[i] })
		for _, l := range all {
			l.shutdown()
		}
		syscall.Kill(h.m.Pid, syscall.SIGKILL)
		waitDead(t, h.m.Pid)
	}, func() {
		forceUnmount(t, mnt, 0)
		for _, l := range []*loopFS{bfs, jfs, tfs} {
			l.unmount()
			l.mount()
		}
	})
}

const hsmCrashFiles = 12

// hsmCrash is one mount under HSM crash testing.
type hsmCrash struct {
	t       *testing.T
	mnt     string
	tier    string
	mountFn func() *hsmMount
	m       *hsmMount

	mu sync.Mutex
	// gens[i] are the generations that file i may hold: the last one
	// written, and one being written.
	gens [hsmCrashFiles][]int
	next int
	// rewriting serializes the rewrites of each file, so that the
	// generation last renamed is the one last recorded.
	rewriting [hsmCrashFiles]sync.Mutex
	crashing  atomic.Bool
	ops       map[string]int
}

func newHSMCrash(t *testing.T, b, mnt, tierDir string, mountFn func() *hsmMount) *hsmCrash {
	h := &hsmCrash{t: t, mnt: mnt, tier: tierDir, mountFn: mountFn, ops: map[string]int{}}
	h.m = mountFn()
	if r := hsm(t, "tier", "add", mnt, "1", "dir://"+tierDir); r.code != 0 {
		t.Fatalf("tier add: %v", r)
	}
	for i := range hsmCrashFiles {
		h.next++
		h.gens[i] = []int{h.next}
		h.writeGen(i, h.next)
	}
	return h
}

// content is generation g of file i: a header naming it, then bytes
// that only (i, g) give, 64 KiB to 1 MiB in all.
func content(i, g int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
	data := make([]byte, 64<<10+rng.IntN(960<<10))
	for k := range data {
		data[k] = byte(rng.Uint32())
	}
	copy(data, fmt.Sprintf("file %d gen %d\n", i, g))
	return data
}

func (h *hsmCrash) path(i int) string { return filepath.Join(h.mnt, "f"+strconv.Itoa(i)) }

// writeGen writes generation g of file i durably: a temporary file,
// synced, renamed over the file, the directory synced.
func (h *hsmCrash) writeGen(i, g int) error {
	tmp := fmt.Sprintf("%s.tmp%d", h.path(i), g)
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(content(i, g))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, h.path(i))
	}
	if err != nil {
		return err
	}
	d, err := os.Open(h.mnt)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// check reads file i and says whether it is exactly one of the
// generations it may hold, and which.
func (h *hsmCrash) check(i int) (int, error) {
	// A rewrite may end while the file is read: what the file held when
	// the read began counts too.
	h.mu.Lock()
	before := slices.Clone(h.gens[i])
	h.mu.Unlock()
	data, err := os.ReadFile(h.path(i))
	if err != nil {
		return 0, err
	}
	var fi, g int
	if _, err := fmt.Sscanf(string(data[:min(len(data), 40)]), "file %d gen %d\n", &fi, &g); err != nil || fi != i {
		return 0, fmt.Errorf("f%d holds no content that the test wrote (%d bytes, starting %q)", i, len(data), data[:min(len(data), 16)])
	}
	h.mu.Lock()
	may := append(before, h.gens[i]...)
	h.mu.Unlock()
	allowed := slices.Contains(may, g)
	if !allowed || !bytes.Equal(data, content(i, g)) {
		return 0, fmt.Errorf("f%d holds generation %d (exact %t), want one of %v", i, g, bytes.Equal(data, content(i, g)), may)
	}
	return g, nil
}

func (h *hsmCrash) hsmCmd(i int, cmd string) error {
	return syscall.Setxattr(h.path(i), "user.hsmfs.hsm", []byte(cmd), 0)
}

// worker runs random operations until stop.
func (h *hsmCrash) worker(rng *rand.Rand, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		i := rng.IntN(hsmCrashFiles)
		var op string
		var err error
		switch x := rng.IntN(100); {
		case x < 30:
			op, err = "archive", h.hsmCmd(i, "archive")
		case x < 55:
			op, err = "release", h.hsmCmd(i, "release")
		case x < 65:
			op, err = "restore", h.hsmCmd(i, "restore")
		case x < 85:
			op = "read"
			_, err = h.check(i)
			if err != nil && !h.crashing.Load() && !isGone(err) {
				h.t.Errorf("read during the run: %v", err)
			}
		default:
			op = "rewrite"
			h.rewriting[i].Lock()
			h.mu.Lock()
			h.next++
			g := h.next
			h.gens[i] = append(h.gens[i], g)
			h.mu.Unlock()
			if err = h.writeGen(i, g); err == nil {
				h.mu.Lock()
				h.gens[i] = []int{g}
				h.mu.Unlock()
			}
			h.rewriting[i].Unlock()
		}
		if err == nil {
			h.mu.Lock()
			h.ops[op]++
			h.mu.Unlock()
		}
	}
}

// isGone: the error of an operation on a mount whose daemon died.
func isGone(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, os.ErrNotExist)
}

// run crashes n times, each after a random stretch of work by three
// workers, and checks every file after each recovery. crash cuts (the
// daemon is dead when it returns); the workers are stopped before
// cleanup unmounts what is left: a worker that went on would write into
// the directory beneath the mount.
func (h *hsmCrash) run(n int, crash, cleanup func()) {
	t := h.t
	seed := crashSeed(t)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := range n {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(round*3+w+1)))
			go func() { defer wg.Done(); h.worker(wrng, stop) }()
		}
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		h.crashing.Store(true)
		crash()
		close(stop)
		wg.Wait()
		cleanup()
		h.crashing.Store(false)
		h.m = h.mountFn()
		h.verify(round)
		if t.Failed() {
			return
		}
	}
	h.mu.Lock()
	t.Logf("%d crashes; operations that succeeded: %v", n, h.ops)
	h.mu.Unlock()
	h.checkObjects()
}

// verify checks, after a recovery, that every archived file's object is
// in the tier, then that every file holds a content the test wrote.
func (h *hsmCrash) verify(round int) {
	t := h.t
	objects := h.objects()
	for i := range hsmCrashFiles {
		st := stateOf(t, h.path(i))
		if slices.Contains(st.States, "archived") && !slices.Contains(objects, st.Object) {
			t.Errorf("round %d: f%d is %v but its object %s is not in the tier", round, i, st.States, st.Object)
		}
		g, err := h.check(i)
		if err != nil {
			t.Errorf("round %d after the crash: %v", round, err)
			continue
		}
		h.mu.Lock()
		h.gens[i] = []int{g}
		h.mu.Unlock()
	}
	// Leftover temporaries of rewrites cut by the crash.
	tmps, _ := filepath.Glob(filepath.Join(h.mnt, "*.tmp*"))
	for _, p := range tmps {
		os.Remove(p)
	}
}

func (h *hsmCrash) objects() []string {
	ents, _ := os.ReadDir(h.tier)
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// checkObjects: in the end the tier holds exactly the archives of the
// files there are (crashed archives, replaced archives and the archives
// of deleted files are collected).
func (h *hsmCrash) checkObjects() {
	t := h.t
	var want []string
	for i := range hsmCrashFiles {
		if st := stateOf(t, h.path(i)); st.Object != "" {
			want = append(want, st.Object)
		}
	}
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = h.objects()
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Errorf("the tier holds %d objects, the files' archives are %d: extra %v", len(got), len(want), diffStrings(got, want))
}

func diffStrings(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}
