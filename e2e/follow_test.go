package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hsmfs/hsmfs/internal/natsexport"
)

// TestFollow: hsmfs follow keeps a mirror of each of two mounts from one
// stream (a follower per mount, with the mount's subject as its filter),
// while writers change the mounts and exporters publish them; one
// follower and the other mount's exporter are SIGKILLed mid-run and
// started again. At the end every
// mirror equals its mount and no message is left unacknowledged.
func TestFollow(t *testing.T) {
	ns := startNATS(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	host, err := os.Hostname()
	must(t, err)
	type followed struct {
		*fleetMount
		follower *exporter // the hsmfs follow process (the same runner)
		durable  string
		metrics  string // its --metrics address
	}
	var fleet []*followed
	for i := 0; i < 2; i++ {
		b, mnt, j := newDirs(t)
		fm := &fleetMount{backing: b, mnt: mnt, journal: j, dest: filepath.Join(filepath.Dir(b), "dest")}
		must(t, os.Mkdir(fm.dest, 0o755))
		fm.m = mount(t, withBacking(b), withMnt(mnt), withJournal(j))
		fleet = append(fleet, &followed{fleetMount: fm, durable: fmt.Sprintf("follow-%d", i)})
	}
	r := hsm(t, "export", "--nats", ns.url(), "--stream", exportStream, "--create-stream", "--max-bytes", "256M", fleet[0].mnt)
	if r.code != 0 {
		t.Fatalf("first export: %v", r)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	stopAll := func() {
		stop.Store(true)
		wg.Wait()
		for _, f := range fleet {
			for _, p := range []*exporter{f.exp, f.follower} {
				if p != nil {
					p.stop()
				}
			}
		}
	}
	t.Cleanup(stopAll)
	for i, f := range fleet {
		dir := filepath.Dir(f.dest)
		f.exp = startExporter(t, filepath.Join(dir, "export.log"),
			"export", "--every", "200ms", "--timeout", "10s", "--nats", ns.url(), "--stream", exportStream, f.mnt)
		filter := natsexport.Subject(natsexport.DefaultSubjectPrefix, host, f.mnt, natsexport.DefaultConsumer)
		f.metrics = freeAddr(t)
		f.follower = startExporter(t, filepath.Join(dir, "follow.log"),
			"follow", "--every", "300ms", "--nats", ns.url(), "--stream", exportStream, "--durable", f.durable, "--filter", filter,
			"--metrics", f.metrics, f.mnt, f.dest)
		wg.Add(1)
		go f.writer(seed+uint64(i), &stop, &wg)
	}

	time.Sleep(2 * time.Second)
	t.Log("SIGKILL follower 0 and exporter 1, start them again")
	fleet[0].follower.kill()
	fleet[0].follower.start(t)
	fleet[1].exp.kill()
	fleet[1].exp.start(t)
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	for _, f := range fleet {
		waitClosed(t, f.mnt)
	}
	for _, f := range fleet {
		waitExported(t, f.fleetMount)
	}

	nc, err := nats.Connect(ns.url())
	must(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err)
	for i, f := range fleet {
		deadline := time.Now().Add(90 * time.Second)
		for {
			c, err := js.Consumer(context.Background(), exportStream, f.durable)
			if err == nil {
				info, err := c.Info(context.Background())
				if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("follower %d not drained after 90s; its log:\n%s", i, f.follower.logText())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for i, f := range fleet {
		// What the follower's metrics say once it has drained (follower
		// 0 counts from its restart).
		fams := scrape(t, f.metrics)
		ok, answers := metricValue(t, fams, "hsmfs_follow_rounds_total", "result", "ok"), metricValue(t, fams, "hsmfs_follow_answers_copied_total")
		if ok == 0 || answers == 0 || metricValue(t, fams, "hsmfs_follow_pending_messages") != 0 ||
			metricValue(t, fams, "hsmfs_follow_last_success_timestamp_seconds") < float64(time.Now().Add(-time.Minute).Unix()) {
			t.Errorf("follower %d metrics: %v rounds ok, %v answers copied, %v messages pending", i, ok, answers,
				metricValue(t, fams, "hsmfs_follow_pending_messages"))
		}
		t.Logf("follower %d metrics: %v rounds ok, %v failed, %v answers, %v paths, %v names copied whole, %v bytes, lag %vs", i, ok,
			metricValue(t, fams, "hsmfs_follow_rounds_total", "result", "failed"), answers,
			metricValue(t, fams, "hsmfs_follow_paths_copied_total"), metricValue(t, fams, "hsmfs_follow_whole_paths_total"),
			metricValue(t, fams, "hsmfs_follow_transferred_bytes_total"), metricValue(t, fams, "hsmfs_follow_lag_seconds"))
	}
	for i, f := range fleet {
		if err := f.follower.stop(); err != nil {
			t.Errorf("follower %d: SIGTERM: %v; log:\n%s", i, err, f.follower.logText())
		}
		if err := f.exp.stop(); err != nil {
			t.Errorf("exporter %d: SIGTERM: %v", i, err)
		}
		want, got := snapshot(t, f.mnt, snapOpts{}), snapshot(t, f.dest, snapOpts{})
		t.Logf("mount %d: %d modifications, %d paths", i, f.mods.Load(), len(want))
		if !sameTree(t, fmt.Sprintf("mount %d: the follower's mirror vs the mount", i), want, got, "mount", "mirror") {
			t.Logf("follower %d log:\n%s", i, f.follower.logText())
		}
		if f.mods.Load() == 0 {
			t.Errorf("mount %d: the writers made no modification", i)
		}
		if log := f.follower.logText(); !strings.Contains(log, "whole answers") {
			t.Errorf("follower %d copied nothing; log:\n%s", i, log)
		} else {
			t.Logf("follower %d:\n%s", i, log)
		}
	}
	// One round without --every: nothing left, exit 0.
	r = hsm(t, "follow", "--nats", ns.url(), "--stream", exportStream, "--durable", fleet[1].durable,
		"--filter", natsexport.Subject(natsexport.DefaultSubjectPrefix, host, fleet[1].mnt, natsexport.DefaultConsumer), fleet[1].mnt, fleet[1].dest)
	if r.code != 0 || !strings.Contains(r.stderr, "0 messages") {
		t.Errorf("hsmfs follow, one round at the end: %v", r)
	}
}

// TestFollowRemote: hsmfs follow copies from a host:path SOURCE through
// the remote shell (a stand-in for ssh) and the remote rsync; the remote
// rsync registers itself with the mount, so released files are read from
// their tier and stay released; a second round copies only what changed.
// A host:path that is no hsmfs mount is refused.
func TestFollowRemote(t *testing.T) {
	ns := startNATS(t)
	m := mount(t)
	want, released := releasedFiles(t, m, 8)

	tools := t.TempDir()
	rsh := fakeSSH(t, tools)
	ran := filepath.Join(tools, "remote-rsync-ran")
	remote := writeScript(t, filepath.Join(tools, "remote-rsync"), fmt.Sprintf("echo ran >> %s\nexec rsync \"$@\"\n", ran))
	dest := t.TempDir()
	round := func(what string) string {
		t.Helper()
		if r := hsm(t, "export", "--nats", ns.url(), "--stream", exportStream, "--create-stream", m.Mnt); r.code != 0 {
			t.Fatalf("%s: export: %v", what, r)
		}
		r := hsm(t, "follow", "--nats", ns.url(), "--stream", exportStream, "--durable", "remote",
			"-e", rsh, "--rsync-path", remote, "localhost:"+m.Mnt, dest)
		if r.code != 0 {
			t.Fatalf("%s: follow: %v", what, r)
		}
		t.Logf("%s: %s", what, strings.TrimSpace(r.stderr))
		for name, data := range want {
			mustRead(t, filepath.Join(dest, name), data)
		}
		return r.stderr
	}
	round("first")
	for _, p := range released {
		if st := stateOf(t, p); !slices.Contains(st.States, "released") {
			t.Errorf("%s: %v after a remote follow, want it still released", p, st.States)
		}
	}
	if data, err := os.ReadFile(ran); err != nil || len(data) == 0 {
		t.Errorf("the --rsync-path program never ran: %v", err)
	}
	writeFile(t, filepath.Join(m.Mnt, "new"), "new")
	want["new"] = []byte("new")
	if out := round("second"); !strings.Contains(out, "1 paths copied") {
		t.Errorf("second round: %q, want only the new file copied", out)
	}
	// A file that becomes a directory with a file in it: DEST, where a
	// remote follower looks, still has the file when the copy begins.
	writeFile(t, filepath.Join(m.Mnt, "e"), "file")
	want["e"] = []byte("file")
	round("e, a file")
	must(t, os.Remove(filepath.Join(m.Mnt, "e")))
	must(t, os.Mkdir(filepath.Join(m.Mnt, "e"), 0o755))
	writeFile(t, filepath.Join(m.Mnt, "e", "x"), "x")
	delete(want, "e")
	want["e/x"] = []byte("x")
	round("e, a directory")
	sameTree(t, "remote follow", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "mount", "mirror")

	r := hsm(t, "follow", "--nats", ns.url(), "--stream", exportStream, "--durable", "other",
		"-e", rsh, "localhost:"+t.TempDir(), t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "not an hsmfs mount") {
		t.Errorf("a remote SOURCE that is no mount: %v, want exit 1 and a refusal", r)
	}
}
