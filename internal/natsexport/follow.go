package natsexport

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// The reader side of the fleet: hsmfs follow keeps DEST an exact copy of
// one mount from the stream alone (docs/fleet.md, "Following a mount").
// It reads with a durable consumer and explicit acks, collects each
// answer's messages (count and index say when it has them all), copies
// whole answers with the contract's rsync from SOURCE, and acks their
// messages only once that copy succeeded: a follower that dies before
// the ack gets them again, and copying a path again is always safe.

// FollowConfig is what one follower needs.
type FollowConfig struct {
	URL       string // nats://host:port, comma-separated for a cluster
	CredsFile string
	Stream    string
	Durable   string // the durable consumer's name: one per follower
	Filter    string // subject filter; "" takes every subject of the stream
	Source    string // the mount point that the messages describe (a local directory)
	Dest      string // the copy
	Rsync     string // the rsync program (default "rsync")
	// AckWait is how long the server waits for an ack before it
	// delivers a message again (default 30 s). The follower tells the
	// server that it still works on the messages it holds (an answer not
	// yet whole, a copy that runs) every third of it; a follower that
	// died has its messages delivered again after it.
	AckWait time.Duration
}

// FollowResult is what one round did.
type FollowResult struct {
	Messages, Repeats int // messages read, of which already held
	Answers           int // whole answers copied
	Paths             int // paths in the list handed to rsync
	Whole             bool
	WhyWhole          string // full, reset, a gap in the stream, a new DEST
	WholePaths        int    // paths copied whole (a name that became a directory)
	Pending           int    // messages of answers not yet whole, kept unacked
}

// Follower reads one mount's answers from the stream.
type Follower struct {
	cfg  FollowConfig
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
	// who is the mount the messages describe (host, mount, consumer),
	// set by the first message; another is refused.
	who string
	// mu guards open and whole against keepHeld's goroutine; the round
	// itself runs on one goroutine.
	mu      sync.Mutex
	open    map[uint64]*followAnswer // answers not yet whole, by query id
	whole   []*followAnswer          // whole answers not yet copied
	copied  map[uint64]bool          // the answers copied (and acked) by this process
	newest  uint64                   // the newest of them (0: none yet)
	lastSeq uint64                   // the highest stream sequence read
}

type followAnswer struct {
	query  uint64
	prev   uint64 // the last answer with paths before it (the message's prev, or else its blessed)
	count  int
	full   bool
	paths  map[int]followEntry
	msgs   []jetstream.Msg
	copied bool
}

type followEntry struct{ path, typ string }

// followMsg is the part of a message that a follower reads.
type followMsg struct {
	Host, Mount, Consumer, Path, Type string
	PathB64                           string `json:"path_b64"`
	Query, Blessed                    uint64
	Prev                              *uint64 // the last earlier answer with paths (absent: unknown)
	Count, Index                      int
	Full, Reset                       bool
}

// NewFollower connects, checks the stream, and makes (or takes up) the
// durable consumer. Refusals come before anything is read.
func NewFollower(ctx context.Context, c FollowConfig) (*Follower, error) {
	if c.URL == "" || c.Stream == "" || c.Durable == "" {
		return nil, errors.New("need a server, a stream and a durable consumer name")
	}
	if c.Rsync == "" {
		c.Rsync = "rsync"
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if strings.Contains(c.Source, ":") && !filepath.IsAbs(c.Source) {
		return nil, fmt.Errorf("source %q: hsmfs follow copies from a local mount point only", c.Source)
	}
	for _, d := range []struct{ what, path string }{{"source", c.Source}, {"DEST", c.Dest}} {
		if fi, err := os.Stat(d.path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%s %s is not a directory", d.what, d.path)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Source, hsmctl.Dir, hsmctl.CtlFile)); err != nil {
		return nil, fmt.Errorf("source %s is not an hsmfs mount", c.Source)
	}
	src, errS := filepath.EvalSymlinks(c.Source)
	dst, errD := filepath.EvalSymlinks(c.Dest)
	if errS == nil && errD == nil && (src == dst || within(dst, src) || within(src, dst)) {
		// A copy into the mount would be tracked and copied again; a
		// whole copy into a parent of the mount would delete it.
		return nil, fmt.Errorf("DEST %s and source %s overlap", c.Dest, c.Source)
	}
	var perm atomic.Pointer[string]
	nc, err := connect(Config{URL: c.URL, CredsFile: c.CredsFile, Host: "follow", Mount: c.Dest}, &perm)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// A cluster electing its leaders (a node down) answers late: that
	// is waited out, not taken for a refusal.
	if err := settled(ctx, func(ctx context.Context) error { _, err := js.Stream(ctx, c.Stream); return err }); err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %q does not exist", c.Stream)
		}
		return nil, fmt.Errorf("stream %q: %w", c.Stream, err)
	}
	var cons jetstream.Consumer
	err = settled(ctx, func(ctx context.Context) (err error) {
		cons, err = js.CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{
			Durable: c.Durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.AckWait,
			DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubject: c.Filter, MaxAckPending: -1,
			Description: "hsmfs follow " + c.Dest,
		})
		return err
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("consumer %q: %w", c.Durable, err)
	}
	return &Follower{cfg: c, nc: nc, js: js, cons: cons, open: map[uint64]*followAnswer{}, copied: map[uint64]bool{}}, nil
}

// Close ends the connection; messages not acked are delivered again to
// the next follower of the durable consumer.
func (f *Follower) Close() { f.nc.Close() }

// Round reads what the stream holds for the follower, copies every whole
// answer, and acks their messages once the copy succeeded. An answer not
// yet whole stays for the next round, unacked.
func (f *Follower) Round(ctx context.Context) (FollowResult, error) {
	var res FollowResult
	stop := f.keepHeld()
	defer stop()
	gap, last, pending, err := f.gap(ctx)
	if err != nil {
		return res, err
	}
	if err := f.read(ctx, &res, pending); err != nil {
		return res, err
	}
	if len(f.whole) == 0 && gap == "" {
		res.Pending = f.pending()
		return res, nil
	}
	if err := f.copy(ctx, gap, &res); err != nil {
		return res, err
	}
	if res.Whole {
		// The whole tree is copied: nothing the stream held when the
		// round began is missing any more.
		f.lastSeq = max(f.lastSeq, last)
	}
	res.Pending = f.pending()
	return res, nil
}

// gap says why the whole tree must be copied if the stream no longer
// holds messages that the follower may never have read: the stream's
// limits dropped them, or it was purged (its first sequence is past what
// the consumer acked and what this process read or covered). It also
// returns the stream's last sequence, which a whole copy covers, and how
// many messages the consumer had not yet delivered. With a filter the
// dropped messages may all be other mounts'; the follower cannot tell,
// and copies whole.
func (f *Follower) gap(ctx context.Context) (why string, last, pending uint64, err error) {
	ci, err := f.cons.Info(ctx)
	if err != nil {
		return "", 0, 0, fmt.Errorf("consumer %q: %w", f.cfg.Durable, err)
	}
	s, err := f.js.Stream(ctx, f.cfg.Stream)
	if err != nil {
		return "", 0, 0, fmt.Errorf("stream %q: %w", f.cfg.Stream, err)
	}
	st := s.CachedInfo().State
	if first := st.FirstSeq; first > 1 && first > ci.AckFloor.Stream+1 && f.lastSeq < first-1 {
		why = fmt.Sprintf("the stream no longer holds messages %d to %d, which this follower did not read", max(ci.AckFloor.Stream, f.lastSeq)+1, first-1)
	}
	return why, st.LastSeq, ci.NumPending, nil
}

// read fetches until the stream has nothing more for now, or for at most
// roundRead time or roundMsgs messages: writers that never pause must not
// keep a round from copying. pending is what the consumer had not yet
// delivered when the round began; the round reads at least that much.
func (f *Follower) read(ctx context.Context, res *FollowResult, pending uint64) error {
	start := time.Now()
	var got uint64
	for time.Since(start) < roundRead && res.Messages < roundMsgs {
		// A round takes what the stream holds now, without waiting for
		// more: a fetch that waited for a full batch would hold every
		// round for its whole wait while a writer trickles changes in,
		// and the mirror would lag by that much. But a no-wait fetch can
		// be answered "nothing" before the consumer has counted a
		// message the stream has just stored, so what the consumer
		// already said it holds is fetched with a short wait.
		want, wait := fetchBatch, false
		if got < pending {
			want, wait = int(min(pending-got, fetchBatch)), true
		}
		var batch jetstream.MessageBatch
		var err error
		if wait {
			batch, err = f.cons.Fetch(want, jetstream.FetchMaxWait(fetchWait))
		} else {
			batch, err = f.cons.FetchNoWait(want)
		}
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := f.take(m, res); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("fetch: %w", err)
		}
		got += uint64(n)
		if n == 0 || (n < want && got >= pending) || ctx.Err() != nil {
			return ctx.Err() // nothing more for now
		}
	}
	return nil
}

// The bounds of one round's reading, and of one fetch.
const (
	roundRead  = 5 * time.Second
	roundMsgs  = 100_000
	fetchBatch = 1000
	fetchWait  = time.Second
)

// take files one message under its answer.
func (f *Follower) take(m jetstream.Msg, res *FollowResult) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	res.Messages++
	if md, err := m.Metadata(); err == nil && md.Sequence.Stream > f.lastSeq {
		f.lastSeq = md.Sequence.Stream
	}
	var fm followMsg
	if err := json.Unmarshal(m.Data(), &fm); err != nil || fm.Query == 0 || fm.Index < 0 || fm.Index >= fm.Count {
		return fmt.Errorf("a message that is not an hsmfs export message: %.200q", m.Data())
	}
	if fm.PathB64 != "" {
		raw, err := base64.StdEncoding.DecodeString(fm.PathB64)
		if err != nil {
			return fmt.Errorf("bad path_b64 in %.200q", m.Data())
		}
		fm.Path = string(raw)
	}
	who := fm.Host + ":" + fm.Mount + " consumer " + fm.Consumer
	if f.who == "" {
		f.who = who
	} else if who != f.who {
		return fmt.Errorf("the stream holds answers of %s and of %s: one follower copies one mount (give --filter %s)",
			f.who, who, "PREFIX."+Token(fm.Host)+"."+Token(strings.TrimPrefix(fm.Mount, "/"))+"."+Token(fm.Consumer))
	}
	if f.copied[fm.Query] {
		// Delivered again after its answer was copied (an ack lost).
		res.Repeats++
		return m.Ack()
	}
	a := f.open[fm.Query]
	if a == nil {
		if i := slices.IndexFunc(f.whole, func(w *followAnswer) bool { return w.query == fm.Query }); i >= 0 {
			res.Repeats++
			f.whole[i].msgs = append(f.whole[i].msgs, m) // acked with its answer
			return nil
		}
		a = &followAnswer{query: fm.Query, prev: fm.Blessed, count: fm.Count, paths: map[int]followEntry{}}
		if fm.Prev != nil {
			// Answers without paths send no message: prev skips them,
			// where blessed would name one as missed.
			a.prev = *fm.Prev
		}
		f.open[fm.Query] = a
	}
	a.msgs = append(a.msgs, m)
	if _, dup := a.paths[fm.Index]; dup {
		res.Repeats++
		return nil
	}
	a.paths[fm.Index] = followEntry{fm.Path, fm.Type}
	a.full = a.full || fm.Full || fm.Reset
	if len(a.paths) == a.count {
		delete(f.open, fm.Query)
		f.whole = append(f.whole, a)
	}
	return nil
}

// keepHeld tells the server, every third of AckWait until the returned
// func runs, that the messages this follower holds are in progress, so
// that they are not delivered again meanwhile. The held messages are
// read under f.mu, since the round adds to them.
func (f *Follower) keepHeld() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(f.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range f.held() {
					m.InProgress()
				}
			}
		}
	}()
	// Once now, too: the time between rounds counts.
	for _, m := range f.held() {
		m.InProgress()
	}
	return func() { close(done); <-finished }
}

// held is the messages this follower holds unacked.
func (f *Follower) held() []jetstream.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	var held []jetstream.Msg
	for _, a := range f.open {
		held = append(held, a.msgs...)
	}
	for _, a := range f.whole {
		held = append(held, a.msgs...)
	}
	return held
}

func (f *Follower) pending() int {
	n := 0
	for _, a := range f.open {
		n += len(a.msgs)
	}
	return n
}

// copy copies the whole answers (or the whole tree) and acks them.
func (f *Follower) copy(ctx context.Context, gap string, res *FollowResult) error {
	// While the mount is down its mount point is a bare directory:
	// rsync would find every listed path missing and delete it from
	// DEST (the whole tree, for a whole copy). Nothing is copied, and
	// nothing acked, until it is back.
	if _, err := os.Stat(filepath.Join(f.cfg.Source, hsmctl.Dir, hsmctl.CtlFile)); err != nil {
		return fmt.Errorf("source %s is not a live hsmfs mount (%v): nothing copied; the next round tries again", f.cfg.Source, err)
	}
	// rsync reads released files from their tier (no recall storm).
	if c, err := hsmctl.Open(f.cfg.Source, ""); err == nil {
		c.NoRecall()
	}
	f.mu.Lock()
	sort.Slice(f.whole, func(i, j int) bool { return f.whole[i].query < f.whole[j].query })
	f.mu.Unlock()
	why := gap
	last := f.newest
	for _, a := range f.whole {
		switch {
		case why != "":
		case a.full:
			why = fmt.Sprintf("answer %d says full", a.query)
		case last != 0 && a.prev > last:
			// The exporter blessed answer a.prev after the last one
			// copied here, and it never came whole: the stream lost it.
			why = fmt.Sprintf("answer %d follows answer %d, which this follower never got whole", a.query, a.prev)
		}
		last = max(last, a.query)
	}
	if why != "" {
		res.Whole, res.WhyWhole = true, why
		if err := f.rsync(ctx, "-a", "-I", "--delete", "--exclude=/.hsm", f.cfg.Source+"/", f.cfg.Dest+"/"); err != nil {
			return err
		}
	} else if err := f.copyAnswers(ctx, res); err != nil {
		return err
	}
	alone, err := f.holdsAllInFlight(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.whole
	var newest uint64
	for _, a := range f.whole {
		newest = max(newest, a.query)
	}
	for q, a := range f.open {
		// An answer that will never be whole: the exporter died while
		// it published it, and did not bless it, so a later answer,
		// copied now, lists every path of it. That is so only if no
		// message of the consumer is in flight elsewhere (delivered to
		// a follower that died, due again): otherwise the rest of it
		// may still come. After a copy of the whole tree, made after
		// their queries ran, every held answer is covered.
		if why != "" || q < newest && alone {
			done = append(done, a)
			delete(f.open, q)
		}
	}
	for _, a := range done {
		for _, m := range a.msgs {
			if err := m.Ack(); err != nil {
				return fmt.Errorf("ack: %w (the answer is copied; it will be delivered and copied again)", err)
			}
		}
		f.copied[a.query] = true
		f.newest = max(f.newest, a.query)
	}
	res.Answers = len(f.whole)
	f.whole = nil
	// The acks go out in order on the connection; a flush returns once
	// the server has them all.
	if err := f.nc.FlushTimeout(30 * time.Second); err != nil {
		return fmt.Errorf("ack: %w (the answers are copied; they will be delivered and copied again)", err)
	}
	return nil
}

// holdsAllInFlight reports whether every message of the consumer that
// has been delivered and not acked is one this follower holds, and none
// is waiting: then an answer it holds part of has no other part left.
func (f *Follower) holdsAllInFlight(ctx context.Context) (bool, error) {
	ci, err := f.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("consumer %q: %w", f.cfg.Durable, err)
	}
	return ci.NumPending == 0 && ci.NumAckPending == len(f.held()), nil
}

// copyAnswers runs the contract's recipe on the paths of the whole
// answers. A path listed as anything but a directory that is a directory
// again when the copy runs is copied whole: a later answer, not yet
// here, may name what it holds, and DEST may keep what an earlier copy
// left beneath it.
func (f *Follower) copyAnswers(ctx context.Context, res *FollowResult) error {
	typ := map[string]string{}
	notDir := map[string]bool{}
	for _, a := range f.whole {
		for _, e := range a.paths {
			typ[e.path] = e.typ
			if e.typ != "dir" {
				notDir[e.path] = true
			}
		}
	}
	// A path beneath an ancestor that is not a directory is left out,
	// as the plain answer leaves it out: rsync replaces the ancestor
	// whole, and refuses the path ("invalid path from sender"). The
	// answers' types are those of their queries; an older answer that
	// came late (delivered again after a follower died) may name a path
	// whose ancestor has become a file since, in an answer copied
	// already. So the ancestors are looked at in SOURCE as it is now.
	notDirNow := map[string]bool{}
	isNotDir := func(d string) bool {
		v, ok := notDirNow[d]
		if !ok {
			var st unix.Stat_t
			v = unix.Lstat(filepath.Join(f.cfg.Source, d), &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR
			notDirNow[d] = v
		}
		return v
	}
	var list []string
	for p := range typ {
		shadowed := false
		for d := filepath.Dir(p); d != "." && d != "/" && !shadowed; d = filepath.Dir(d) {
			if t, ok := typ[d]; ok && t != "dir" && t != "gone" || isNotDir(d) {
				shadowed = true
			}
		}
		if !shadowed {
			list = append(list, p)
		}
	}
	sort.Strings(list)
	res.Paths = len(list)
	lf, err := os.CreateTemp("", "hsmfs-follow-*.list")
	if err != nil {
		return err
	}
	defer os.Remove(lf.Name())
	_, err = io.WriteString(lf, strings.Join(list, "\x00")+"\x00")
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := f.rsync(ctx, "-a", "-I", "--from0", "--files-from="+lf.Name(), "--delete-missing-args", "--force",
		f.cfg.Source+"/", f.cfg.Dest+"/"); err != nil {
		return err
	}
	for _, p := range list {
		var st unix.Stat_t
		if !notDir[p] || unix.Lstat(filepath.Join(f.cfg.Source, p), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		res.WholePaths++
		if err := f.rsync(ctx, "-a", "-I", "--delete", filepath.Join(f.cfg.Source, p)+"/", filepath.Join(f.cfg.Dest, p)+"/"); err != nil {
			return err
		}
	}
	return nil
}

// rsync runs rsync; exit 24 (a file vanished: what changed after the
// query, which a later answer lists) is success.
func (f *Follower) rsync(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, f.cfg.Rsync, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 24 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rsync %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RunFollow runs a round every interval until ctx ends; each round's
// result or error goes to report.
func (f *Follower) RunFollow(ctx context.Context, every time.Duration, report func(FollowResult, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := f.Round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		report(res, err)
		if f.nc.IsClosed() {
			return errors.New("the connection to the server is closed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// within reports whether p lies beneath dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}
