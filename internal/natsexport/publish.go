package natsexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// msgID is the Nats-Msg-Id of one message: a hash of host, mount,
// consumer, query id and the entry's line (which holds the path). A
// query id names one answer of one journal, so the id is the same for
// every publish of the same path of the same answer, and only for those:
// a retried publish is a duplicate the stream drops, and nothing else is.
func msgID(base string, entry []byte) string {
	h := sha256.New()
	h.Write([]byte(base))
	h.Write(entry)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// inflight is one message between its first publish and its ack.
type inflight struct {
	msg   *nats.Msg
	fut   jetstream.PubAckFuture
	first time.Time // of the first attempt; the message fails AckTimeout after it
}

// publishAll publishes every message next yields (nil: no more) and
// returns once the stream has acknowledged each one, with the number of
// duplicates, or with the first error that retrying could not overcome.
//
// A producer (this goroutine) publishes asynchronously and queues each
// future; a collector waits for the futures in order. The queue's
// capacity bounds the messages in flight, and so the memory (each is
// kept until its ack, for a retry). A message whose ack does not come
// is published again, same id, until AckTimeout has passed since its
// first attempt.
func (x *Exporter) publishAll(ctx context.Context, next func() (*nats.Msg, error)) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan *inflight, x.cfg.MaxInflight)
	type outcome struct {
		dups int
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		dups, err := x.collect(ctx, queue)
		if err != nil {
			cancel(err) // stops the producer
			for range queue {
			}
		}
		done <- outcome{dups, err}
	}()

	var perr error
	for ctx.Err() == nil {
		m, err := next()
		if err != nil || m == nil {
			perr = err
			break
		}
		p := &inflight{msg: m, first: time.Now()}
		if err := x.send(ctx, p); err != nil {
			perr = err
			break
		}
		select {
		case queue <- p:
		case <-ctx.Done():
		}
	}
	if perr != nil {
		cancel(perr)
	}
	close(queue)
	out := <-done
	switch {
	case perr != nil:
		return out.dups, perr
	case out.err != nil:
		return out.dups, out.err
	case ctx.Err() != nil:
		return out.dups, context.Cause(ctx)
	}
	return out.dups, nil
}

// collect waits for the acks of the queued messages, in order, retrying
// the ones that fail.
func (x *Exporter) collect(ctx context.Context, queue <-chan *inflight) (int, error) {
	dups := 0
	for p := range queue {
		wait := 50 * time.Millisecond
		for {
			var err error
			select {
			case ack := <-p.fut.Ok():
				if ack.Duplicate {
					dups++
				}
			case err = <-p.fut.Err():
			case <-ctx.Done():
				return dups, context.Cause(ctx)
			}
			if err == nil {
				break
			}
			if err = x.retryable(p, err); err != nil {
				return dups, err
			}
			// Not at once: a server that answers "no responders" is
			// restarting or electing a leader.
			select {
			case <-ctx.Done():
				return dups, context.Cause(ctx)
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Second)
			if err := x.send(ctx, p); err != nil {
				return dups, err
			}
		}
	}
	return dups, nil
}

// send publishes p (again), retrying what the client refuses at once
// (e.g. its reconnect buffer is full while the server is away).
func (x *Exporter) send(ctx context.Context, p *inflight) error {
	wait := 50 * time.Millisecond
	for {
		fut, err := x.js.PublishMsgAsync(p.msg)
		if err == nil {
			p.fut = fut
			return nil
		}
		if err := x.retryable(p, err); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// retryable returns nil if the failed publish of p should be tried again
// (the same message, the same id: if the first attempt was stored after
// all, the stream drops the second as a duplicate), or the error that
// ends the round.
func (x *Exporter) retryable(p *inflight, err error) error {
	if perr := x.permError(); perr != nil {
		return fmt.Errorf("publish to %s refused: %w", x.subject, perr)
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Code != 503:
		// The stream answered and said no (wrong stream, message too
		// large, ...): the same message would get the same answer.
		return fmt.Errorf("stream %q refused a message: %w", x.cfg.Stream, err)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == 10077:
		// JSStreamStoreFailedF: the store is full (discard new) or
		// failing. Retrying within the round rarely helps; the next
		// round tries again.
		return fmt.Errorf("stream %q could not store a message: %w", x.cfg.Stream, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject):
		return fmt.Errorf("publish: %w", err)
	case time.Since(p.first) > x.cfg.AckTimeout:
		return fmt.Errorf("the stream did not acknowledge a message within %s: %w", x.cfg.AckTimeout, err)
	}
	return nil
}
