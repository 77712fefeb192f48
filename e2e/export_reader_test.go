package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// The fleet reader of TestExportFleet: it mirrors each mount from the
// stream alone, as docs/fleet.md tells a reader to.

// fleetMount is one mount of the fleet and its mirror.
type fleetMount struct {
	backing, mnt, journal, dest string
	m                           *hsmMount
	exp                         *exporter
	// gate: writers and the reader's rsync hold it shared; a crash takes
	// it while the mountpoint is bare, so that rsync never copies the
	// empty directory underneath (it would delete the mirror's files).
	gate sync.RWMutex
	mods atomic.Int64
	// The reader's paths not yet copied: path -> (type, query), from
	// every whole answer that arrived; kept across failed rsyncs.
	pending map[string]pendingPath
	// history: what the reader did with each path (the answers that
	// listed it, the copies that took it), for a failure's log.
	history map[string][]string
}

// note adds to the history of path p.
func (fm *fleetMount) note(p, format string, a ...any) {
	if fm.history == nil {
		fm.history = map[string][]string{}
	}
	fm.history[p] = append(fm.history[p], fmt.Sprintf(format, a...))
}

type pendingPath struct {
	typ   string
	query uint64
	// notDir: some answer held listed it as not a directory (gone, a
	// file, ...). If it is a directory when the copy runs (made again
	// since that query), DEST may hold stale entries beneath it that no
	// later answer lists: it is then copied whole.
	notDir bool
}

// mirrorReader reads the stream with a durable consumer and mirrors each
// mount: it collects each answer's messages (by mount and query id; the
// messages carry count and index) and, once it holds a whole answer,
// runs the contract's rsync for it. Delivery is at least once, and a
// path may come in several answers: a repeated message is ignored, and
// copying a listed path again is always safe.
type mirrorReader struct {
	t      *testing.T
	cons   jetstream.Consumer
	mounts map[string]*fleetMount
	open   map[answerKey]map[int]exportMsg // answers still incomplete
	whole  map[answerKey]bool

	msgs, repeats, answers, rsyncs, rsyncFails int
	wholeCopies                                int // paths copied whole (pendingPath.notDir)
	lastTry                                    time.Time
}

type answerKey struct {
	mount string
	query uint64
}

type exportMsg struct {
	Host, Mount, Consumer, Path, PathB64, Type string
	Query                                      uint64
	Count, Index                               int
}

func newMirrorReader(t *testing.T, url string, mounts []*fleetMount) *mirrorReader {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	must(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err)
	cons, err := js.CreateOrUpdateConsumer(context.Background(), exportStream, jetstream.ConsumerConfig{
		Durable: "mirror", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	must(t, err)
	r := &mirrorReader{t: t, cons: cons, mounts: map[string]*fleetMount{}, open: map[answerKey]map[int]exportMsg{}, whole: map[answerKey]bool{}}
	for _, fm := range mounts {
		r.mounts[fm.mnt] = fm
	}
	return r
}

// step fetches what is there (waiting up to wait) and handles it; it
// reports how many messages came.
func (r *mirrorReader) step(wait time.Duration) (int, error) {
	batch, err := r.cons.Fetch(200, jetstream.FetchMaxWait(wait))
	if err != nil {
		return 0, err
	}
	n := 0
	for m := range batch.Messages() {
		n++
		r.handle(m.Data())
		// Acked once handled: the reader's state lives in this process.
		m.Ack()
	}
	if len(r.pendingMounts()) > 0 && time.Since(r.lastTry) > 200*time.Millisecond {
		r.copyAll()
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return n, err
	}
	return n, nil
}

func (r *mirrorReader) handle(data []byte) {
	r.msgs++
	var m exportMsg
	if err := json.Unmarshal(data, &m); err != nil {
		r.t.Errorf("reader: bad message %q: %v", data, err)
		return
	}
	if m.PathB64 != "" {
		raw, err := base64.StdEncoding.DecodeString(m.PathB64)
		if err != nil {
			r.t.Errorf("reader: bad path_b64 in %q", data)
			return
		}
		m.Path = string(raw)
	}
	fm := r.mounts[m.Mount]
	if fm == nil || m.Consumer != "default" || m.Host == "" || m.Query == 0 || m.Index < 0 || m.Index >= m.Count {
		r.t.Errorf("reader: unexpected message %s", data)
		return
	}
	k := answerKey{m.Mount, m.Query}
	if r.whole[k] {
		r.repeats++
		return
	}
	a := r.open[k]
	if a == nil {
		a = map[int]exportMsg{}
		r.open[k] = a
	}
	if _, dup := a[m.Index]; dup {
		r.repeats++
		return
	}
	a[m.Index] = m
	if len(a) < m.Count {
		return
	}
	// A whole answer: its paths join the mount's pending set (a newer
	// answer's type wins) and are copied.
	delete(r.open, k)
	r.whole[k] = true
	r.answers++
	for _, e := range a {
		fm.note(e.Path, "answer %d: %s", e.Query, e.Type)
		old, ok := fm.pending[e.Path]
		pp := pendingPath{e.Type, e.Query, old.notDir || e.Type != "dir"}
		if ok && old.query > e.Query {
			pp.typ, pp.query = old.typ, old.query
		}
		fm.pending[e.Path] = pp
	}
	r.copy(fm)
}

func (r *mirrorReader) pendingMounts() []*fleetMount {
	var out []*fleetMount
	for _, fm := range r.mounts {
		if len(fm.pending) > 0 {
			out = append(out, fm)
		}
	}
	return out
}

func (r *mirrorReader) copyAll() {
	for _, fm := range r.pendingMounts() {
		r.copy(fm)
	}
}

// copy runs the contract's rsync on the mount's pending paths. A path
// beneath a listed ancestor that is not a directory is left out, as the
// plain answer leaves it out: rsync replaces the ancestor whole, and
// would fail on the path ("Not a directory"). On failure (the tree
// changed under rsync, the mount is down) the paths stay pending.
func (r *mirrorReader) copy(fm *fleetMount) bool {
	r.lastTry = time.Now()
	var list []string
	for p := range fm.pending {
		shadowed := false
		for d := filepath.Dir(p); d != "." && !shadowed; d = filepath.Dir(d) {
			if a, ok := fm.pending[d]; ok && a.typ != "dir" && a.typ != "gone" {
				shadowed = true
			}
		}
		if !shadowed {
			list = append(list, p)
		}
	}
	sort.Strings(list)
	lf := filepath.Join(filepath.Dir(fm.dest), "list")
	if err := os.WriteFile(lf, []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		r.t.Errorf("reader: %v", err)
		return false
	}
	// A scratch --temp-dir, as the crash tests' consumers: an rsync that
	// aborts while the tree changes can leave its temporary (freshScratch).
	scratch, err := freshScratch(fm.dest)
	if err != nil {
		r.t.Errorf("reader: %v", err)
		return false
	}
	fm.gate.RLock()
	out, err := rsyncRun("-a", "-I", "--temp-dir="+scratch, "--files-from="+lf, "--delete-missing-args", "--force", fm.mnt+"/", fm.dest+"/")
	for _, p := range list {
		var st unix.Stat_t
		if err == nil && fm.pending[p].notDir && unix.Lstat(filepath.Join(fm.mnt, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			fm.note(p, "copied whole")
			r.wholeCopies++
			out, err = rsyncRun("-a", "-I", "--temp-dir="+scratch, "--delete", fm.mnt+"/"+p+"/", fm.dest+"/"+p+"/")
		}
	}
	fm.gate.RUnlock()
	r.rsyncs++
	if err != nil {
		if r.rsyncFails++; r.rsyncFails <= 10 {
			r.t.Logf("reader: rsync of %d paths of %s failed, kept pending: %v: %.300s", len(list), fm.mnt, err, out)
		}
		return false
	}
	for _, p := range list {
		fm.note(p, "copied (rsync %d)", r.rsyncs)
	}
	fm.pending = map[string]pendingPath{}
	return true
}

// rsyncRun runs rsync; exit 24 (what vanished changed after the query,
// and the next answer lists it) is success.
func rsyncRun(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rsync", args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 24 {
		err = nil
	}
	return out, err
}

// logHistory logs what the reader did with each of paths and with
// their ancestors.
func (fm *fleetMount) logHistory(t *testing.T, paths []string) {
	seen := map[string]bool{}
	for _, p := range paths {
		for q := p; q != "." && !seen[q]; q = filepath.Dir(q) {
			seen[q] = true
			t.Logf("%s: %s", q, strings.Join(fm.history[q], "; "))
		}
	}
}
