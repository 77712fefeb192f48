package natsexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Exporter publishes the answers of one consumer of one mount into a
// JetStream stream and blesses each answer once the stream holds all of it.
type Exporter struct {
	cfg     Config
	src     source
	subject string
	nc      *nats.Conn
	js      jetstream.JetStream
	perm    atomic.Pointer[string] // the last permissions violation the server reported
	stream  *jetstream.StreamInfo
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
	x := &Exporter{cfg: c, src: newSource(c.Mount, c.Consumer), subject: Subject(c.SubjectPrefix, c.Host, c.Mount, c.Consumer)}
	if err := x.src.check(c.Mount, c.Consumer); err != nil {
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
	if x.stream, warnings, err = openStream(ctx, x.js, c, x.subject); err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintf(warn, "hsmfs export: warning: %s\n", w)
	}
	if err := probe(ctx, x.js, c, x.subject, &x.perm); err != nil {
		return nil, err
	}
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
	if err := x.src.check(x.cfg.Mount, x.cfg.Consumer); err != nil {
		return res, err
	}
	// A refusal of an earlier round may have been lifted since (the
	// account fixed): only what the server says during this one counts.
	x.perm.Store(nil)
	start := time.Now()
	a, err := x.src.query()
	if err != nil {
		return res, err
	}
	defer a.close()
	res.Query, res.Count = a.hdr.Query, a.hdr.Count
	res.QueryTime = time.Since(start)

	start = time.Now()
	prefix := x.messagePrefix(a.hdr)
	idBase := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00", x.cfg.Host, x.cfg.Mount, x.cfg.Consumer, a.hdr.Query)
	next := func() (*nats.Msg, error) {
		entry, err := a.next()
		if entry == nil || err != nil {
			return nil, err
		}
		m := nats.NewMsg(x.subject)
		m.Data = a.message(prefix, entry)
		m.Header.Set(jetstream.MsgIDHeader, msgID(idBase, entry))
		// The stream must be ours: a message that another stream took
		// would be acknowledged, but not where the readers look.
		m.Header.Set(jetstream.ExpectedStreamHeader, x.cfg.Stream)
		return m, nil
	}
	res.Duplicates, err = x.publishAll(ctx, next)
	res.Publish = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("query %d: nothing blessed: %w", a.hdr.Query, err)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("query %d: nothing blessed: %w", a.hdr.Query, err)
	}

	start = time.Now()
	if err := x.src.bless(a.hdr.Query); err != nil {
		return res, err
	}
	res.BlessTime = time.Since(start)
	res.Blessed = true
	return res, nil
}

// messagePrefix is the start of every message of one answer: the fields
// the exporter adds, then (see answer.message) "index" and the entry's.
// count and index let a reader tell when it holds a whole answer.
func (x *Exporter) messagePrefix(h header) []byte {
	str := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return fmt.Appendf(nil, `{"host":%s,"mount":%s,"consumer":%s,"query":%d,"count":%d,"recovered":%t,"full":%t,"reset":%t,`,
		str(x.cfg.Host), str(x.cfg.Mount), str(x.cfg.Consumer), h.Query, h.Count, h.Recovered, h.Full, h.Reset)
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
