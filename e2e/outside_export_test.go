package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/internal/outside"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestExportFullAfterIndexLost: a mount whose check could not list what
// was removed while hsmfs did not run (its tree index was removed) tells
// every consumer to copy the whole tree; an exporter's readers learn it
// from the messages of that answer, which is never empty (the root).
func TestExportFullAfterIndexLost(t *testing.T) {
	ns := startNATS(t)
	b, mn, j := newDirs(t)
	writeFiles(t, b, "f")
	mnt := mounter(t, b, mn, j)
	m := mnt()
	if r := hsm(t, "consumer", "add", mn, "fleet"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	export := func() {
		t.Helper()
		if r := hsm(t, "export", "--nats", ns.url(), "--stream", exportStream, "--create-stream", "--consumer", "fleet", mn); r.code != 0 {
			t.Fatalf("export: %v", r)
		}
	}
	export() // the new consumer's first (empty) answer is blessed
	m.unmount(t)
	must(t, os.Remove(outside.IndexPath(j)))
	must(t, os.Remove(filepath.Join(b, "f")))
	mnt()
	export()
	nc, err := nats.Connect(ns.url())
	must(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, exportStream, jetstream.OrderedConsumerConfig{})
	must(t, err)
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(2*time.Second))
	must(t, err)
	var got []string
	full := false
	for msg := range batch.Messages() {
		var e struct {
			Path string `json:"path"`
			Full bool   `json:"full"`
		}
		must(t, json.Unmarshal(msg.Data(), &e))
		got = append(got, string(msg.Data()))
		full = full || e.Full
	}
	if !full {
		t.Errorf("no message says full after the index was lost; the stream holds:\n%s", strings.Join(got, "\n"))
	}
}
