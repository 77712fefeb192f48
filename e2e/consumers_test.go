package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestConsumers: two named consumers and the default keep three mirrors
// on independent schedules, through the CLI, the files of
// .hsm/consumers/NAME/ and hsmfs sync; a record stays until every one has
// blessed past it; list and rm work; bad names and unknown consumers are
// refused.
func TestConsumers(t *testing.T) {
	m := mount(t)
	mn := m.Mnt
	reset(t, mn)
	for _, n := range []string{"backup", "index"} {
		if r := hsm(t, "consumer", "add", mn, n); r.code != 0 {
			t.Fatalf("consumer add %s: %v", n, r)
		}
	}
	if r := hsm(t, "consumer", "add", mn, "backup"); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("adding backup twice: %v", r)
	}
	if r := hsm(t, "consumer", "add", mn, "a b"); r.code != 1 {
		t.Errorf("a bad name: %v", r)
	}
	ents, err := os.ReadDir(filepath.Join(mn, ".hsm", "consumers"))
	must(t, err)
	if len(ents) != 2 || ents[0].Name() != "backup" || ents[1].Name() != "index" {
		t.Errorf(".hsm/consumers lists %v", ents)
	}
	dests := map[string]string{}
	for _, n := range []string{"default", "backup", "index"} {
		dests[n] = filepath.Join(t.TempDir(), n)
	}
	sync := func(name string) {
		t.Helper()
		if r := hsm(t, "sync", "--consumer", name, mn, dests[name]); r.code != 0 {
			t.Fatalf("sync --consumer %s: %v", name, r)
		}
		sameTree(t, "consumer "+name, snapshot(t, mn, snapOpts{}), snapshot(t, dests[name], snapOpts{}), "MNT", name)
	}
	writeFile(t, filepath.Join(mn, "a"), "a")
	sync("default")
	sync("backup") // its first answer says full: a whole copy
	must(t, os.MkdirAll(filepath.Join(mn, "d", "e"), 0o755))
	writeFile(t, filepath.Join(mn, "d", "e", "f"), "f")
	must(t, os.Rename(filepath.Join(mn, "a"), filepath.Join(mn, "d", "a")))
	sync("backup")
	// index has never synced: everything since it was added is pending.
	list := consumerList(t, mn)
	if p := list["index"]["pending_paths"].(float64); p < 4 {
		t.Errorf("index has %v paths pending, want at least 4: %v", p, list["index"])
	}
	if p := list["backup"]["pending_paths"].(float64); p != 0 {
		t.Errorf("backup has %v paths pending after its sync", p)
	}
	// A named consumer's own files, by hand.
	data, err := os.ReadFile(filepath.Join(mn, ".hsm", "consumers", "index", "changes.json"))
	must(t, err)
	var hdr struct {
		Query    uint64 `json:"query"`
		Full     bool   `json:"full"`
		Consumer string `json:"consumer"`
	}
	must(t, json.Unmarshal([]byte(strings.SplitN(string(data), "\n", 2)[0]), &hdr))
	if !hdr.Full || hdr.Consumer != "index" {
		t.Errorf("index's first answer header: %+v, want full and consumer index", hdr)
	}
	// backup may not bless index's query.
	if r := hsm(t, "bless", "--consumer", "backup", strconv.FormatUint(hdr.Query, 10), mn); r.code != 1 {
		t.Errorf("backup blessed index's query %d: %v", hdr.Query, r)
	}
	sync("index")
	sync("default")
	writeFile(t, filepath.Join(mn, "d", "e", "f"), "f2")
	sync("index")
	sync("default")
	sync("backup")
	if r := hsm(t, "changes", "--consumer", "nobody", mn); r.code != 1 || !strings.Contains(r.stderr, "no consumer") {
		t.Errorf("changes of an unknown consumer: %v", r)
	}
	if r := hsm(t, "consumer", "rm", mn, "index"); r.code != 0 {
		t.Errorf("consumer rm: %v", r)
	}
	if _, ok := consumerList(t, mn)["index"]; ok {
		t.Errorf("index still listed after rm")
	}
	if r := hsm(t, "consumer", "list", mn); r.code != 0 || !strings.Contains(r.stdout, "backup") {
		t.Errorf("consumer list: %v", r)
	}
}

func consumerList(t *testing.T, mnt string) map[string]map[string]any {
	t.Helper()
	r := hsm(t, "consumer", "list", "--json", mnt)
	if r.code != 0 {
		t.Fatalf("consumer list --json: %v", r)
	}
	var cs []map[string]any
	must(t, json.Unmarshal([]byte(r.stdout), &cs))
	out := map[string]map[string]any{}
	for _, c := range cs {
		out[c["name"].(string)] = c
	}
	return out
}
