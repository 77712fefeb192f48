package natsexport

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishAnswer puts an answer's messages into the stream as an exporter
// would (only the fields a follower reads).
func publishAnswer(t *testing.T, js jetstream.JetStream, subject string, query uint64, full bool, paths map[string]string) {
	t.Helper()
	publishAfter(t, js, subject, query, 0, full, paths)
}

// publishAfter is publishAnswer of an answer whose consumer's last bless
// was blessed.
func publishAfter(t *testing.T, js jetstream.JetStream, subject string, query, blessed uint64, full bool, paths map[string]string) {
	t.Helper()
	i := 0
	for p, typ := range paths {
		b, _ := json.Marshal(map[string]any{"host": "h", "mount": "/m", "consumer": "default", "query": query, "blessed": blessed,
			"count": len(paths), "index": i, "full": full, "path": p, "type": typ})
		if _, err := js.Publish(context.Background(), subject, b); err != nil {
			t.Fatal(err)
		}
		i++
	}
}

// followStream starts a server with a stream S of hsmfs.> and returns
// a client of it.
func followStream(t *testing.T) (*testServer, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	ts := startServer(t, nil)
	nc, err := nats.Connect(ts.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	stream, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "S", Subjects: []string{"hsmfs.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return ts, js, stream
}

// fakeSource is a directory that looks like a live hsmfs mount (its
// .hsm/ctl exists).
func fakeSource(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, ".hsm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, ".hsm", "ctl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// settledRound runs one round of f once its consumer counts every message the
// stream holds: the server stores a message and only then tells its
// consumers, so a round right after a publish could miss it (and take it
// the next round, which a test cannot wait for).
func settledRound(ctx context.Context, t *testing.T, f *Follower) (FollowResult, error) {
	t.Helper()
	consumerSettles(ctx, t, f, "to count what the stream holds", func(ci *jetstream.ConsumerInfo, st jetstream.StreamState) bool {
		return max(ci.Delivered.Stream, st.FirstSeq-1)+ci.NumPending >= st.LastSeq
	})
	return f.Round(ctx)
}

// roundOK is settledRound, failing the test (naming what) on an error.
func roundOK(ctx context.Context, t *testing.T, f *Follower, what string) FollowResult {
	t.Helper()
	res, err := settledRound(ctx, t, f)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

// unacked waits for the count of f's delivered and unacked messages to
// be want, and returns it: the server applies an ack some time after it
// received it.
func unacked(ctx context.Context, t *testing.T, f *Follower, want int) int {
	t.Helper()
	ci := consumerSettles(ctx, t, f, "", func(ci *jetstream.ConsumerInfo, _ jetstream.StreamState) bool { return ci.NumAckPending == want })
	return ci.NumAckPending
}

// consumerSettles polls f's consumer until ok holds, for at most 5 s; it
// fails the test then only if what names what it waited for.
func consumerSettles(ctx context.Context, t *testing.T, f *Follower, what string, ok func(*jetstream.ConsumerInfo, jetstream.StreamState) bool) *jetstream.ConsumerInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ci, err := f.cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, err := f.js.Stream(ctx, f.cfg.Stream)
		if err != nil {
			t.Fatal(err)
		}
		if ok(ci, s.CachedInfo().State) {
			return ci
		}
		if time.Now().After(deadline) {
			if what != "" {
				t.Fatalf("the consumer did not settle %s: %+v", what, ci)
			}
			return ci
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFollowerRound: a whole answer is copied, and its messages acked;
// not while the source is not a live mount (a bare mount point would
// make rsync delete what DEST holds).
func TestFollowerRound(t *testing.T) {
	ts, js, _ := followStream(t)
	src, dest := fakeSource(t), t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(src, "b"), []byte("b"), 0o644)
	f, err := NewFollower(context.Background(), FollowConfig{URL: ts.url(), Stream: "S", Durable: "d", Source: src, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	publishAnswer(t, js, "hsmfs.h.m.default", 1, false, map[string]string{"a": "file", "b": "file"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	os.Rename(filepath.Join(src, ".hsm"), filepath.Join(src, ".down"))
	if _, err := settledRound(ctx, t, f); err == nil || !strings.Contains(err.Error(), "not a live hsmfs mount") {
		t.Errorf("a round while the mount is down: %v, want a refusal", err)
	}
	if n := unacked(ctx, t, f, 2); n != 2 {
		t.Errorf("%d messages unacked after a refused round, want 2", n)
	}
	os.Rename(filepath.Join(src, ".down"), filepath.Join(src, ".hsm"))
	res, err := settledRound(ctx, t, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Answers != 1 {
		t.Errorf("round: %+v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "b")); string(b) != "b" {
		t.Errorf("b not copied")
	}
	if n := unacked(ctx, t, f, 0); n != 0 {
		t.Errorf("%d messages unacked after the copy", n)
	}
}

// TestFollowerWholeCopies: an answer that says full, and a stream that
// no longer holds messages the follower did not read, are copied as the
// whole tree (DEST loses what SOURCE does not hold); an answer that is
// not yet whole waits, unacked, and one that will never be whole is
// dropped once a later one is copied; messages of a second mount stop the
// follower.
func TestFollowerWholeCopies(t *testing.T) {
	ts, js, stream := followStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, dest := fakeSource(t), t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dest, "stale"), []byte("x"), 0o644)
	f, err := NewFollower(ctx, FollowConfig{URL: ts.url(), Stream: "S", Durable: "d", Source: src, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	subj := "hsmfs.h.m.default"
	round := func(what string) FollowResult { t.Helper(); return roundOK(ctx, t, f, what) }

	publishAnswer(t, js, subj, 1, true, map[string]string{".": "dir"})
	if res := round("full"); !res.Whole || !strings.Contains(res.WhyWhole, "full") {
		t.Errorf("a full answer: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(dest, "stale")); err == nil {
		t.Errorf("the whole copy kept DEST/stale")
	}

	// Half of answer 2 (its exporter died), then answer 3 whole.
	b, _ := json.Marshal(map[string]any{"host": "h", "mount": "/m", "consumer": "default", "query": 2, "count": 2, "index": 0, "path": "a", "type": "file"})
	js.Publish(ctx, subj, b)
	if res := round("half"); res.Answers != 0 || res.Pending != 1 || unacked(ctx, t, f, 1) != 1 {
		t.Errorf("half an answer: %+v, %d unacked, want it held", res, unacked(ctx, t, f, 1))
	}
	publishAfter(t, js, subj, 3, 1, false, map[string]string{"a": "file"})
	if res := round("covered"); res.Answers != 1 || res.Pending != 0 || unacked(ctx, t, f, 0) != 0 {
		t.Errorf("a later whole answer: %+v, %d unacked, want the half one dropped", res, unacked(ctx, t, f, 0))
	}

	// The stream loses messages the follower did not read.
	publishAfter(t, js, subj, 4, 3, false, map[string]string{"a": "file"})
	if err := stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	publishAfter(t, js, subj, 5, 4, false, map[string]string{"a": "file"})
	os.WriteFile(filepath.Join(dest, "stale"), []byte("x"), 0o644)
	if res := round("gap"); !res.Whole || !strings.Contains(res.WhyWhole, "never got whole") {
		t.Errorf("after a purge: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(dest, "stale")); err == nil {
		t.Errorf("the whole copy after the gap kept DEST/stale")
	}
	if res := round("after the gap"); res.Whole {
		t.Errorf("the gap copied whole again: %+v", res)
	}

	b, _ = json.Marshal(map[string]any{"host": "h", "mount": "/other", "consumer": "default", "query": 9, "count": 1, "index": 0, "path": "a", "type": "file"})
	js.Publish(ctx, "hsmfs.h.other.default", b)
	if _, err := settledRound(ctx, t, f); err == nil || !strings.Contains(err.Error(), "--filter") {
		t.Errorf("a second mount's message: %v, want a refusal naming --filter", err)
	}
}

// TestFollowerRefusals: a source that is not an hsmfs mount, and a DEST
// that overlaps the source, are refused before anything is read.
func TestFollowerRefusals(t *testing.T) {
	ts, _, _ := followStream(t)
	src := fakeSource(t)
	for name, c := range map[string]struct{ src, dest, want string }{
		"not a mount":     {t.TempDir(), t.TempDir(), "not an hsmfs mount"},
		"dest in source":  {src, filepath.Join(src, ".hsm"), "overlap"},
		"source in dest":  {src, filepath.Dir(src), "overlap"},
		"the same":        {src, src, "overlap"},
		"remote, no host": {"host:/srv", t.TempDir(), "not an hsmfs mount"},
	} {
		_, err := NewFollower(context.Background(), FollowConfig{URL: ts.url(), Stream: "S", Durable: "d", Source: c.src, Dest: c.dest})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestFollowerSkipsEmptyAnswers: an exporter's rounds whose answers hold
// no path send no message, so an answer's "blessed" names one the
// follower never saw; "prev" (the last earlier answer with paths) tells
// that nothing was missed, and the follower copies the answer's paths
// only. A prev that the follower did not get whole still makes it copy
// the whole tree.
func TestFollowerSkipsEmptyAnswers(t *testing.T) {
	ts, js, _ := followStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, dest := fakeSource(t), t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		os.WriteFile(filepath.Join(src, n), []byte(n), 0o644)
	}
	f, err := NewFollower(ctx, FollowConfig{URL: ts.url(), Stream: "S", Durable: "d", Source: src, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	publish := func(query, blessed, prev uint64, paths ...string) {
		t.Helper()
		for i, p := range paths {
			b, _ := json.Marshal(map[string]any{"host": "h", "mount": "/m", "consumer": "default", "query": query, "blessed": blessed,
				"prev": prev, "count": len(paths), "index": i, "path": p, "type": "file"})
			if _, err := js.Publish(ctx, "hsmfs.h.m.default", b); err != nil {
				t.Fatal(err)
			}
		}
	}
	round := func(what string) FollowResult { t.Helper(); return roundOK(ctx, t, f, what) }
	publish(2, 1, 0, "a")
	round("answer 2")
	// A file only DEST holds: a whole copy would delete it.
	os.WriteFile(filepath.Join(dest, "only-in-dest"), nil, 0o644)
	publish(5, 4, 2, "b") // answers 3 and 4 were empty
	if res := round("answer 5 after two empty answers"); res.Whole {
		t.Fatalf("answer 5 (prev 2, two empty answers between) was copied whole: %s", res.WhyWhole)
	}
	if _, err := os.Stat(filepath.Join(dest, "b")); err != nil {
		t.Fatal("b not copied")
	}
	publish(9, 8, 7, "c") // answer 7 had paths, and never came
	if res := round("answer 9 after a lost one"); !res.Whole {
		t.Fatal("answer 9 follows answer 7, which never came, and was not copied whole")
	}
	if _, err := os.Stat(filepath.Join(dest, "only-in-dest")); err == nil {
		t.Fatal("the whole copy kept what SOURCE does not hold")
	}
}
