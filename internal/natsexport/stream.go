package natsexport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connect opens the connection. A server that cannot be reached or that
// refuses the credentials is a refusal: nothing has been queried yet.
// Once connected, the client reconnects on its own, for ever: an outage
// after the start fails rounds, it does not end the exporter.
func connect(c Config, perm *atomic.Pointer[string]) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("hsmfs export " + c.Host + ":" + c.Mount),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A publish the account may not make is dropped by the server
		// with an asynchronous error and no reply: remember it, so that
		// a timed-out publish can name the real reason.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				s := err.Error()
				perm.Store(&s)
			}
		}),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	nc, err := nats.Connect(c.URL, opts...)
	switch {
	case err == nil:
		return nc, nil
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return nil, fmt.Errorf("server %s refused the credentials: %w", c.URL, err)
	case errors.Is(err, nats.ErrNoServers):
		return nil, fmt.Errorf("cannot reach server %s: %w", c.URL, err)
	default:
		return nil, fmt.Errorf("connect to %s: %w", c.URL, err)
	}
}

// streamConfig is what --create-stream creates: every subject under the
// prefix, on disk, and full means refusing new messages (DiscardNew),
// never dropping old ones that a reader may not have read yet.
func streamConfig(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "hsmfs change records (hsmfs export)",
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    c.Limits.MaxBytes,
		MaxAge:      c.Limits.MaxAge,
		Duplicates:  c.Limits.DupWindow,
		Replicas:    c.Limits.Replicas,
	}
}

// openStream finds the stream (or creates it with CreateStream), checks
// that it takes the exporter's subject and returns the warnings its
// limits call for.
func openStream(ctx context.Context, js jetstream.JetStream, c Config, subject string) (*jetstream.StreamInfo, []string, error) {
	s, err := js.Stream(ctx, c.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !c.CreateStream {
			return nil, nil, fmt.Errorf("stream %q does not exist: create it (docs/fleet.md), or pass --create-stream", c.Stream)
		}
		s, err = js.CreateStream(ctx, streamConfig(c))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another exporter created it meanwhile: use theirs.
			s, err = js.Stream(ctx, c.Stream)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("create stream %q: %w", c.Stream, err)
		}
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, nil, fmt.Errorf("stream %q: the server has no JetStream for this account: %w", c.Stream, err)
		}
		return nil, nil, fmt.Errorf("stream %q: %w", c.Stream, err)
	}
	info := s.CachedInfo()
	subjects := info.Config.Subjects
	if len(subjects) == 0 {
		subjects = []string{info.Config.Name} // a stream without subjects takes its name
	}
	taken := false
	for _, f := range subjects {
		taken = taken || subjectMatches(f, subject)
	}
	if !taken {
		return nil, nil, fmt.Errorf("stream %q does not take subject %s (its subjects: %s); use --subject, or add %s.> to the stream",
			c.Stream, subject, strings.Join(subjects, " "), c.SubjectPrefix)
	}
	return info, limitWarnings(info.Config, c.AckTimeout), nil
}

// limitWarnings names the settings under which the stream may remove
// messages that a reader has not read yet. hsmfs discards its records
// once the stream acknowledged them, so such a message is gone for good:
// sizing the stream is the operator's job, the exporter only says so.
func limitWarnings(sc jetstream.StreamConfig, ackTimeout time.Duration) []string {
	var w []string
	if sc.Discard == jetstream.DiscardOld && (sc.MaxMsgs > 0 || sc.MaxBytes > 0) {
		w = append(w, fmt.Sprintf("stream %q discards its oldest messages when full (discard old, max_msgs %d, max_bytes %d): a reader that falls that far behind loses changes; size it, or use discard new",
			sc.Name, sc.MaxMsgs, sc.MaxBytes))
	}
	if sc.MaxMsgsPerSubject > 0 && !sc.DiscardNewPerSubject {
		w = append(w, fmt.Sprintf("stream %q keeps only %d messages per subject (one subject per mount): older changes of a mount are dropped",
			sc.Name, sc.MaxMsgsPerSubject))
	}
	if sc.MaxAge > 0 {
		w = append(w, fmt.Sprintf("stream %q removes messages after %s, read or not: a reader stopped for longer loses changes", sc.Name, sc.MaxAge))
	}
	if sc.Retention == jetstream.InterestPolicy {
		w = append(w, fmt.Sprintf("stream %q keeps messages only for the consumers that exist when they arrive (interest retention): define the readers' consumers first", sc.Name))
	}
	if sc.Duplicates > 0 && sc.Duplicates < ackTimeout {
		w = append(w, fmt.Sprintf("stream %q's duplicate window (%s) is shorter than the publish timeout (%s): a late retry may be stored twice", sc.Name, sc.Duplicates, ackTimeout))
	}
	return w
}

// probeOffset is an expected last sequence no stream reaches: the stream
// answers the probe with "wrong last sequence" and stores nothing.
const probeOffset = 1 << 62

// probe proves, without storing anything, that a message on subject
// reaches the stream and that the account may publish it: the stream
// must answer, and only with its "wrong last sequence" error.
func probe(ctx context.Context, js jetstream.JetStream, c Config, subject string, perm *atomic.Pointer[string]) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	// A refused publish gets no reply at all: stop waiting as soon as
	// the server's asynchronous error is in.
	go func() {
		for ctx.Err() == nil && perm.Load() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: nil},
		jetstream.WithExpectStream(c.Stream), jetstream.WithExpectLastSequence(probeOffset))
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return nil
	case err == nil:
		return fmt.Errorf("stream %q stored the probe on %s: it ignores expected-sequence headers", c.Stream, subject)
	case perm.Load() != nil:
		return fmt.Errorf("the account may not publish to %s: %s", subject, *perm.Load())
	case errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no stream answers on %s: %w", subject, err)
	default:
		return fmt.Errorf("probe publish to %s (stream %q): %w", subject, c.Stream, err)
	}
}

// settleTimeout bounds how long an exporter or a follower that starts
// waits for a cluster that is electing its leaders (a node is down):
// its requests time out meanwhile, which is not a refusal.
const settleTimeout = time.Minute

// transient reports whether err is one that a cluster electing its
// leaders gives, and that a retry may not.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	// 10008: "JetStream system temporarily unavailable".
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == 10008
}

// settled runs op until it succeeds, fails for good, or settleTimeout
// has passed; each try has a few seconds.
func settled(ctx context.Context, op func(ctx context.Context) error) error {
	deadline := time.Now().Add(settleTimeout)
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := op(tctx)
		cancel()
		if err == nil || !transient(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}
