package natsexport

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hsmsync "github.com/hsmfs/hsmfs/internal/sync"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// Source is the mount point that the messages describe: a local
	// directory, or host:path through the remote shell.
	Source    string
	Dest      string // the copy, a local directory
	Rsync     string // the rsync program (default "rsync")
	Rsh       string // rsync -e: the remote shell, for a host:path Source
	RsyncPath string // rsync --rsync-path: rsync on Source's host
	// Progress: rsync's own progress on Stdout (a terminal); without
	// it a copy that runs over a second prints a line now and then.
	Progress       bool
	Stdout, Stderr io.Writer
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
	Bytes             int64  // what rsync transferred
	// Lag is how long the oldest message that the round acked had been
	// in the stream when its copy completed: how far behind the mount
	// the copy was (0: nothing acked).
	Lag time.Duration
}

// Follower reads one mount's answers from the stream.
type Follower struct {
	cfg    FollowConfig
	remote bool // Source is host:path
	rs     *hsmsync.Rsync
	nc     *nats.Conn
	js     jetstream.JetStream
	cons   jetstream.Consumer
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
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	f := &Follower{cfg: c, remote: hsmsync.IsRemote(c.Source), open: map[uint64]*followAnswer{}, copied: map[uint64]bool{}}
	if err := f.checkPaths(ctx); err != nil {
		return nil, err
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
	f.nc, f.js, f.cons = nc, js, cons
	return f, nil
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
