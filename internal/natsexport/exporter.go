package natsexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Exporter publishes the answers of one consumer of one mount into a
// JetStream stream and blesses each answer once the stream holds all of it.
type Exporter struct {
	cfg     Config
	subject string
	// by is what the exporter's blesses say ("bless ... by BY"): a bless
	// that says anything else was not the exporter's.
	by     string
	nc     *nats.Conn
	js     jetstream.JetStream
	perm   atomic.Pointer[string] // the last permissions violation the server reported
	stream *jetstream.StreamInfo
	// sent is the last answer with paths that this exporter published
	// and blessed (0: none), known says whether it knows (see prevSent);
	// its messages carry it as "prev". An answer without paths sends no
	// message, so "blessed" alone would make a reader take every empty
	// round for an answer it missed.
	sent  uint64
	known bool
}

// Result says what one round did.
type Result struct {
	Query      uint64 // the query's id (0 if the query failed)
	Count      int    // paths in the answer: one message each
	Duplicates int    // messages the stream already held (retries)
	Blessed    bool
	QueryTime  time.Duration // running the query (opening changes.json)
	Publish    time.Duration // reading the answer and publishing until the last ack
	BlessTime  time.Duration
}

// New checks the configuration, that the mount (and the consumer) is
// there, connects, finds or creates the stream, and proves with a probe
// that the stream takes the exporter's messages. Every failure here is a
// refusal: no query has been run, so nothing can have been blessed.
// Warnings about the stream's limits go to warn.
func New(ctx context.Context, cfg Config, warn io.Writer) (*Exporter, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	x := &Exporter{cfg: c, subject: Subject(c.SubjectPrefix, c.Host, c.Mount, c.Consumer)}
	x.by = hsmctl.ShortBy("export " + c.Stream + " " + x.subject)
	if _, err := hsmctl.Open(c.Mount, c.Consumer); err != nil {
		return nil, err
	}
	if x.nc, err = connect(c, &x.perm); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			x.nc.Close()
		}
	}()
	x.js, err = jetstream.New(x.nc,
		jetstream.WithPublishAsyncTimeout(min(attemptTimeout, c.AckTimeout)),
		// The pipeline bounds what is in flight itself (MaxInflight); the
		// library's own bound sits above it so that it never stalls.
		jetstream.WithPublishAsyncMaxPending(2*c.MaxInflight))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var warnings []string
	err = settled(ctx, func(ctx context.Context) (err error) {
		x.stream, warnings, err = openStream(ctx, x.js, c, x.subject)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintf(warn, "hsmfs export: warning: %s\n", w)
	}
	if err := settled(ctx, func(ctx context.Context) error { return probe(ctx, x.js, c, x.subject, &x.perm) }); err != nil {
		return nil, err
	}
	x.sent, x.known = x.prevSent(ctx)
	ok = true
	return x, nil
}

// Subject is the subject the exporter publishes on.
func (x *Exporter) Subject() string { return x.subject }

// Close drains nothing: a round that did not finish was not blessed.
func (x *Exporter) Close() { x.nc.Close() }

// Round runs one query, publishes one message per path, waits until the
// stream has acknowledged every one of them, and only then blesses the
// query. On any error nothing is blessed: the next round's query lists
// the same paths again (and more).
func (x *Exporter) Round(ctx context.Context) (Result, error) {
	var res Result
	src, err := hsmctl.Open(x.cfg.Mount, x.cfg.Consumer)
	if err != nil {
		return res, err
	}
	// A refusal of an earlier round may have been lifted since (the
	// account fixed): only what the server says during this one counts.
	x.perm.Store(nil)
	start := time.Now()
	a, err := src.Query()
	if err != nil {
		return res, err
	}
	defer a.Close()
	h := a.Header
	res.Query, res.Count = h.Query, h.Count
	res.QueryTime = time.Since(start)
	full, err := x.full(h)
	if err != nil {
		return res, err
	}

	start = time.Now()
	// A full answer without a path (a new consumer with nothing changed
	// yet, an answer too long to list) still goes out, as one message
	// for the root: without it the readers would never learn that they
	// must copy the whole tree, and the bless below would end it.
	rootOnly := full && h.Count == 0
	if rootOnly {
		h.Count = 1
	}
	prefix := x.messagePrefix(h, full)
	idBase := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00", x.cfg.Host, x.cfg.Mount, x.cfg.Consumer, h.Query)
	next := func() (*nats.Msg, error) {
		entry, err := a.Next()
		if err != nil {
			return nil, err
		}
		index := a.N() - 1
		if rootOnly {
			entry, index, rootOnly = []byte(`{"path":".","type":"dir","ops":[]}`), 0, false
		}
		if entry == nil {
			return nil, nil
		}
		m := nats.NewMsg(x.subject)
		m.Data = message(prefix, index, entry)
		m.Header.Set(jetstream.MsgIDHeader, msgID(idBase, entry))
		// The stream must be ours: a message that another stream took
		// would be acknowledged, but not where the readers look.
		m.Header.Set(jetstream.ExpectedStreamHeader, x.cfg.Stream)
		return m, nil
	}
	res.Duplicates, err = x.publishAll(ctx, next)
	res.Publish = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("query %d: nothing blessed: %w", h.Query, err)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("query %d: nothing blessed: %w", h.Query, err)
	}

	start = time.Now()
	if err := src.Bless(h.Query, full, x.by); err != nil {
		return res, err
	}
	res.BlessTime = time.Since(start)
	res.Blessed = true
	if h.Count > 0 {
		x.sent, x.known = h.Query, true
	}
	return res, nil
}

// prevSent finds, at start, the last answer with paths that an earlier
// exporter of this subject published and blessed: the stream's last
// message of the subject, if its answer is at or below the consumer's
// last bless (a later one was cut short, and what came before it is not
// known). A subject without a message has none.
func (x *Exporter) prevSent(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := x.js.Stream(ctx, x.cfg.Stream)
	if err != nil {
		return 0, false
	}
	m, err := s.GetLastMsgForSubject(ctx, x.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, true
	}
	if err != nil {
		return 0, false
	}
	var last struct{ Query uint64 }
	if json.Unmarshal(m.Data, &last) != nil {
		return 0, false
	}
	src, err := hsmctl.Open(x.cfg.Mount, x.cfg.Consumer)
	if err != nil {
		return 0, false
	}
	st, _, err := src.Status()
	if err != nil {
		return 0, false
	}
	blessed := st.LastBlessed
	for _, c := range st.Consumers {
		if c.Name == x.cfg.Consumer {
			blessed = c.LastBlessed
		}
	}
	return last.Query, last.Query <= blessed
}

// ErrForeignBless: the consumer's last bless was not the exporter's, and
// the answer holds no path to carry the full flag to the readers.
var ErrForeignBless = errors.New("the consumer's last bless was not this exporter's")

// full says whether the readers must copy the whole tree for this
// answer: it says so itself (a new or reset consumer, a lost index), or
// the consumer's last bless was made by someone else (hsmfs bless, a
// sync, another exporter), whose answer the readers never got. The
// exporter's own blesses say x.by. An answer without paths cannot carry
// the flag (no message goes out): it is not blessed, and the next answer
// that holds a path goes out as full.
func (x *Exporter) full(h hsmctl.Header) (bool, error) {
	if h.Full || h.Blessed == 0 || h.BlessedBy == x.by {
		return h.Full, nil
	}
	if h.Count == 0 {
		return false, fmt.Errorf("query %d: nothing blessed: %w (query %d, by %q): its readers may lack what that bless discarded; "+
			"the next answer that lists a path goes out as full", h.Query, ErrForeignBless, h.Blessed, h.BlessedBy)
	}
	return true, nil
}

// messagePrefix is the start of every message of one answer: the fields
// the exporter adds, then (see message) "index" and the entry's.
// count and index let a reader tell when it holds a whole answer;
// blessed, the answer before it that the stream holds whole (the
// consumer's last bless, this exporter's own unless full), and prev,
// the last one before it that had paths (absent where the exporter does
// not know it), let it tell that it missed one.
func (x *Exporter) messagePrefix(h hsmctl.Header, full bool) []byte {
	str := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	prev := ""
	if x.known {
		prev = fmt.Sprintf(`"prev":%d,`, x.sent)
	}
	return fmt.Appendf(nil, `{"host":%s,"mount":%s,"consumer":%s,"query":%d,"blessed":%d,%s"count":%d,"recovered":%t,"full":%t,"reset":%t,`,
		str(x.cfg.Host), str(x.cfg.Mount), str(x.cfg.Consumer), h.Query, h.Blessed, prev, h.Count, h.Recovered, full, h.Reset)
}

// Run runs a round every interval until ctx ends. A failed round is
// reported and tried again at the next tick (hsmfs keeps everything
// until a bless); only a connection closed for good ends Run with an
// error. report is called after each round.
func (x *Exporter) Run(ctx context.Context, every time.Duration, report func(Result, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := x.Round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		report(res, err)
		if err != nil && x.nc.IsClosed() {
			return fmt.Errorf("connection closed: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// permError is the permissions violation the server reported, if any.
func (x *Exporter) permError() error {
	if p := x.perm.Load(); p != nil {
		return errors.New(*p)
	}
	return nil
}
