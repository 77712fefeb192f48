package natsexport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// These tests run the exporter against a real JetStream server embedded
// in the test binary, and against a directory laid out like a mount's
// control files (.hsm/changes.json, .hsm/ctl as plain files): the FUSE
// side is e2e's (e2e/export_test.go).

// testServer is an embedded nats-server with JetStream on disk.
type testServer struct {
	t    testing.TB
	opts *server.Options
	s    *server.Server
}

func startServer(t testing.TB, mod func(*server.Options)) *testServer {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: os.Getenv("NATS_TEST_LOG") == ""}
	if mod != nil {
		mod(opts)
	}
	ts := &testServer{t: t, opts: opts}
	ts.start()
	// Later starts use the same port, so that clients find it again.
	ts.opts.Port = ts.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	s, err := server.NewServer(ts.opts)
	if err != nil {
		ts.t.Fatalf("nats-server: %v", err)
	}
	if os.Getenv("NATS_TEST_LOG") != "" {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		ts.t.Fatalf("nats-server not ready")
	}
	ts.s = s
}

func (ts *testServer) stop() {
	if ts.s != nil {
		ts.s.Shutdown()
		ts.s.WaitForShutdown()
		ts.s = nil
	}
}

func (ts *testServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", ts.opts.Port) }

// fakeMount lays out MOUNT/.hsm (or a named consumer's directory) with
// an answer of query id and paths, and an empty ctl.
func fakeMount(t *testing.T, consumer string, id uint64, paths ...string) (mount string, dir string) {
	t.Helper()
	mount = t.TempDir()
	dir = filepath.Join(mount, ".hsm")
	if consumer != "" && consumer != DefaultConsumer {
		dir = filepath.Join(dir, "consumers", consumer)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	setAnswer(t, dir, id, len(paths), paths...)
	if err := os.WriteFile(filepath.Join(dir, "ctl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return mount, dir
}

// setAnswer writes changes.json with a header saying count.
func setAnswer(t *testing.T, dir string, id uint64, count int, paths ...string) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"blessed":0,"count":%d,"query":%d,"recovered":false}`+"\n", count, id)
	for i, p := range paths {
		fmt.Fprintf(&b, `{"path":%q,"type":"file","ops":["write"],"period":%d,"inflight":false,"ino":%d,"nlink":1}`+"\n", p, id-1, 100+i)
	}
	if err := os.WriteFile(filepath.Join(dir, "changes.json"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ctlText(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ctl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testConfig(ts *testServer, mount string) Config {
	return Config{URL: ts.url(), Stream: "HSMFS", Mount: mount, Host: "node.example.com", CreateStream: true,
		AckTimeout: 2 * time.Second, MaxInflight: 4}
}

// streamMsgs returns the stream's messages in order.
func streamMsgs(t *testing.T, ts *testServer, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	nc, err := nats.Connect(ts.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestRoundPublishesThenBlesses(t *testing.T) {
	ts := startServer(t, nil)
	paths := []string{"a.txt", "dir/b", "sp ace", "x", "y", "z"} // more than MaxInflight
	mount, dir := fakeMount(t, "", 7, paths...)
	var warn bytes.Buffer
	x, err := New(context.Background(), testConfig(ts, mount), &warn)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if warn.Len() != 0 {
		t.Errorf("a stream made by --create-stream should draw no warning: %s", warn.String())
	}
	want := "hsmfs.node_example_com." + Token(strings.TrimPrefix(mount, "/")) + ".default"
	if x.Subject() != want {
		t.Errorf("subject %q, want %q", x.Subject(), want)
	}
	res, err := x.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Query != 7 || res.Count != len(paths) || res.Duplicates != 0 || !res.Blessed {
		t.Errorf("round: %+v", res)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 7 by export ") {
		t.Errorf("ctl got %q, want bless 7", got)
	}
	msgs := streamMsgs(t, ts, "HSMFS")
	if len(msgs) != len(paths) {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), len(paths))
	}
	ids := map[string]bool{}
	for i, m := range msgs {
		var body struct {
			Host, Mount, Consumer, Path, Type string
			Query                             uint64
			Count, Index                      int
			Ops                               []string
			Ino                               uint64
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			t.Fatalf("message %d: %v: %s", i, err, m.Data)
		}
		if body.Host != "node.example.com" || body.Mount != mount || body.Consumer != "default" || body.Query != 7 ||
			body.Count != len(paths) || body.Index != i || body.Path != paths[i] || body.Type != "file" || body.Ino != uint64(100+i) {
			t.Errorf("message %d: %s", i, m.Data)
		}
		if m.Subject != want {
			t.Errorf("message %d on %q, want %q", i, m.Subject, want)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id == "" || ids[id] {
			t.Errorf("message %d: id %q missing or repeated", i, id)
		}
		ids[id] = true
	}

	// The same answer again (as after a crash between the last ack and
	// the bless): every message is a duplicate and the stream keeps one
	// copy.
	res, err = x.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != len(paths) {
		t.Errorf("second publish of the same answer: %d duplicates, want %d", res.Duplicates, len(paths))
	}
	if n := len(streamMsgs(t, ts, "HSMFS")); n != len(paths) {
		t.Errorf("after the republish the stream holds %d messages, want %d", n, len(paths))
	}

	// An empty answer publishes nothing and is blessed.
	setAnswer(t, dir, 9, 0)
	if res, err := x.Round(context.Background()); err != nil || !res.Blessed || res.Count != 0 {
		t.Errorf("empty answer: %+v, %v", res, err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 9 by export ") {
		t.Errorf("ctl got %q, want bless 9", got)
	}
}

func TestNamedConsumerFiles(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "backup", 3, "f")
	if dir != filepath.Join(mount, ".hsm", "consumers", "backup") {
		t.Fatalf("consumer dir %s", dir)
	}
	os.WriteFile(filepath.Join(mount, ".hsm", "ctl"), nil, 0o644) // the mount's own
	cfg := testConfig(ts, mount)
	cfg.Consumer = "backup"
	x, err := New(context.Background(), cfg, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := x.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 3 by export ") {
		t.Errorf("consumer ctl got %q", got)
	}
	if !strings.HasSuffix(x.Subject(), ".backup") {
		t.Errorf("subject %q does not end with the consumer", x.Subject())
	}
	// A consumer that does not exist is named as such.
	cfg.Consumer = "nope"
	os.MkdirAll(filepath.Join(mount, ".hsm"), 0o755)
	os.WriteFile(filepath.Join(mount, ".hsm", "ctl"), nil, 0o644)
	if _, err := New(context.Background(), cfg, os.Stderr); err == nil || !strings.Contains(err.Error(), `no consumer "nope"`) {
		t.Errorf("missing consumer: %v", err)
	}
}

// refused checks that New fails with an error naming want, and that
// nothing was blessed.
func refused(t *testing.T, cfg Config, dir, want string) {
	t.Helper()
	x, err := New(context.Background(), cfg, os.Stderr)
	if err == nil {
		x.Close()
		t.Fatalf("New succeeded, want an error with %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if got := ctlText(t, dir); got != "" {
		t.Errorf("refused, yet ctl got %q", got)
	}
}

func TestRefusals(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "", 5, "a")

	cfg := testConfig(ts, mount)
	cfg.CreateStream = false
	refused(t, cfg, dir, "--create-stream")

	cfg = testConfig(ts, mount)
	cfg.URL = "nats://127.0.0.1:1"
	refused(t, cfg, dir, "cannot reach")

	cfg = testConfig(ts, mount)
	cfg.Mount = t.TempDir()
	refused(t, cfg, dir, "not an hsmfs mount")

	// A stream whose subjects do not take ours.
	nc, err := nats.Connect(ts.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg = testConfig(ts, mount)
	cfg.Stream = "OTHER"
	refused(t, cfg, dir, "does not take subject")

	// An answer cut short (the mount died while it was read) is not
	// blessed.
	x, err := New(context.Background(), testConfig(ts, mount), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	setAnswer(t, dir, 6, 3, "a", "b")
	if _, err := x.Round(context.Background()); err == nil || !strings.Contains(err.Error(), "ends after 2 of 3") {
		t.Errorf("truncated answer: %v", err)
	}
	if got := ctlText(t, dir); got != "" {
		t.Errorf("truncated answer blessed: ctl %q", got)
	}
}

// TestServerAway: while the server is down, a round fails (nothing
// blessed); once it is back, the next one succeeds on the same
// connection.
func TestServerAway(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "", 4, "a", "b", "c")
	x, err := New(context.Background(), testConfig(ts, mount), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	ts.stop()
	start := time.Now()
	if _, err := x.Round(context.Background()); err == nil {
		t.Fatal("round succeeded with the server down")
	} else {
		t.Logf("server down: %v (after %.1fs)", err, time.Since(start).Seconds())
	}
	if got := ctlText(t, dir); got != "" {
		t.Fatalf("blessed while the server was down: %q", got)
	}
	ts.start()
	var res Result
	for i := 0; i < 50; i++ {
		if res, err = x.Round(context.Background()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !res.Blessed {
		t.Fatalf("after the restart: %+v %v", res, err)
	}
	if n := len(streamMsgs(t, ts, "HSMFS")); n != 3 {
		t.Errorf("stream holds %d messages, want 3", n)
	}
}

func TestLimitWarnings(t *testing.T) {
	c, _ := Config{URL: "x", Stream: "S", Mount: "/m"}.withDefaults()
	if w := limitWarnings(streamConfig(c), c.AckTimeout); len(w) != 0 {
		t.Errorf("the created stream draws warnings: %q", w)
	}
	sc := streamConfig(c)
	sc.Discard, sc.MaxAge, sc.MaxMsgsPerSubject = jetstream.DiscardOld, time.Hour, 10
	w := strings.Join(limitWarnings(sc, c.AckTimeout), "\n")
	for _, want := range []string{"discard old", "per subject", "after 1h0m0s"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not say %q", w, want)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := Subject("acme.hsmfs", "web-01.example.com", "/srv/my data", "default"); got != "acme.hsmfs.web-01_example_com.srv_my_data.default" {
		t.Errorf("subject %q", got)
	}
	if got := Token(""); got != "_" {
		t.Errorf("Token(\"\") = %q", got)
	}
	for _, c := range []struct {
		filter, subj string
		want         bool
	}{
		{"hsmfs.>", "hsmfs.a.b.c", true}, {"hsmfs.>", "hsmfs", false}, {"hsmfs.*.*.*", "hsmfs.a.b.c", true},
		{"hsmfs.*", "hsmfs.a.b", false}, {"other.>", "hsmfs.a", false}, {"hsmfs.a.b.c", "hsmfs.a.b.c", true},
	} {
		if got := subjectMatches(c.filter, c.subj); got != c.want {
			t.Errorf("subjectMatches(%q, %q) = %v", c.filter, c.subj, got)
		}
	}
	for _, bad := range []string{"", "a..b", "a.*", "a.>", "a b", ".a"} {
		if CheckSubjectPrefix(bad) == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
}

// A bless of the exporter's consumer that the exporter did not make
// discarded what its readers never got: the next answer goes out as
// full (and is blessed so); an answer with no path cannot carry that and
// is not blessed. Its own blesses (by x.by) draw nothing.
func TestForeignBlessPublishesFull(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "", 7)
	x, err := New(context.Background(), testConfig(ts, mount), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	header := func(id uint64, count int, by string) {
		t.Helper()
		text := fmt.Sprintf(`{"blessed":5,"blessed_by":%q,"count":%d,"query":%d,"recovered":false}`+"\n", by, count, id)
		for i := 0; i < count; i++ {
			text += fmt.Sprintf(`{"path":"p%d","type":"file","ops":["write"],"period":%d}`+"\n", i, id-1)
		}
		if err := os.WriteFile(filepath.Join(dir, "changes.json"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "ctl"), nil, 0o644)
	}
	header(7, 0, "hsmfs bless by alice")
	if res, err := x.Round(context.Background()); !errors.Is(err, ErrForeignBless) || res.Blessed {
		t.Errorf("empty answer after a foreign bless: %+v, %v; want ErrForeignBless, not blessed", res, err)
	}
	if got := ctlText(t, dir); got != "" {
		t.Errorf("empty answer after a foreign bless was blessed: %q", got)
	}
	header(8, 2, "hsmfs bless by alice")
	if res, err := x.Round(context.Background()); err != nil || !res.Blessed {
		t.Fatalf("answer after a foreign bless: %+v, %v", res, err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 8 full by export ") {
		t.Errorf("ctl got %q, want bless 8 full by export ...", got)
	}
	for _, m := range streamMsgs(t, ts, "HSMFS") {
		if !strings.Contains(string(m.Data), `"full":true`) {
			t.Errorf("message after a foreign bless does not say full: %s", m.Data)
		}
	}
	header(9, 1, x.by)
	if _, err := x.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 9 by export ") {
		t.Errorf("after its own bless: ctl got %q, want bless 9 by export ...", got)
	}
	msgs := streamMsgs(t, ts, "HSMFS")
	if last := string(msgs[len(msgs)-1].Data); !strings.Contains(last, `"full":false`) {
		t.Errorf("message after the exporter's own bless says full: %s", last)
	}
}

// TestFullAnswerWithoutPaths: an answer that says full and lists no path
// (a new consumer with nothing changed, an answer too long to list) goes
// out as one message for the root that says full, and only then is
// blessed full: a reader must learn that it copies the whole tree.
func TestFullAnswerWithoutPaths(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "", 4)
	x, err := New(context.Background(), testConfig(ts, mount), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	text := `{"query":4,"blessed":3,"count":0,"full":true,"full_why":"the answer would list over 8 paths","recovered":false}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "changes.json"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := x.Round(context.Background()); err != nil || !res.Blessed {
		t.Fatalf("round: %+v, %v", res, err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 4 full by export ") {
		t.Errorf("ctl got %q, want bless 4 full by export ...", got)
	}
	msgs := streamMsgs(t, ts, "HSMFS")
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1 for the root", len(msgs))
	}
	var m map[string]any
	if err := json.Unmarshal(msgs[0].Data, &m); err != nil {
		t.Fatal(err)
	}
	if m["full"] != true || m["count"] != 1.0 || m["index"] != 0.0 || m["path"] != "." || m["type"] != "dir" {
		t.Errorf("the root's message: %s", msgs[0].Data)
	}
}

// TestPrevSkipsEmptyAnswers: messages carry prev, the last earlier answer
// with paths that the exporter published and blessed; an empty answer
// sends nothing and does not become prev. A new exporter finds prev from
// the stream's last message of its subject, if the mount blessed that
// answer, and otherwise leaves it out.
func TestPrevSkipsEmptyAnswers(t *testing.T) {
	ts := startServer(t, nil)
	mount, dir := fakeMount(t, "", 7, "a")
	status := func(blessed uint64) {
		t.Helper()
		b := fmt.Sprintf(`{"last_blessed":%d,"consumers":[{"name":"default","last_blessed":%d}]}`, blessed, blessed)
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status(0)
	prevs := func() []any {
		var out []any
		for _, m := range streamMsgs(t, ts, "HSMFS") {
			var body map[string]any
			json.Unmarshal(m.Data, &body)
			out = append(out, body["prev"])
		}
		return out
	}
	round := func(x *Exporter, id uint64, paths ...string) {
		t.Helper()
		setAnswer(t, dir, id, len(paths), paths...)
		if res, err := x.Round(context.Background()); err != nil || !res.Blessed {
			t.Fatalf("round %d: %+v, %v", id, res, err)
		}
	}
	x, err := New(context.Background(), testConfig(ts, mount), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	round(x, 7, "a")
	round(x, 9)       // empty: no message
	round(x, 11, "b") // prev 7, not 9
	x.Close()
	if got, want := fmt.Sprint(prevs()), "[0 7]"; got != want {
		t.Fatalf("prev of the messages: %s, want %s", got, want)
	}
	// A new exporter: the mount blessed answer 11, the stream's last.
	status(11)
	x, err = New(context.Background(), testConfig(ts, mount), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	round(x, 13, "c")
	x.Close()
	// One started after a round that published and did not bless.
	status(12)
	setAnswer(t, dir, 15, 1, "d")
	x, err = New(context.Background(), testConfig(ts, mount), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	round(x, 15, "d")
	if got, want := fmt.Sprint(prevs()), "[0 7 11 <nil>]"; got != want {
		t.Fatalf("prev of the messages: %s, want %s", got, want)
	}
}
