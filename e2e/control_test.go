package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ---- the control directory ----

// Header is the first line of changes.json.
type Header struct {
	Query     uint64 `json:"query"`
	Blessed   uint64 `json:"blessed"`
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
	Full      bool   `json:"full"`
	// OutsideCheck: what the check at mount for changes made while
	// hsmfs did not run did (ran, skipped, first mount, ...).
	OutsideCheck string `json:"outside_check"`
}

// Entry is one path of changes.json.
type Entry struct {
	Path     string   `json:"path"`
	PathB64  string   `json:"path_b64"`
	Type     string   `json:"type"`
	Ops      []string `json:"ops"`
	Period   uint64   `json:"period"`
	Inflight bool     `json:"inflight"`
	Ino      uint64   `json:"ino"`
	Nlink    uint32   `json:"nlink"`
	Inos     []uint64 `json:"inos"` // other inodes modified under this name
}

// Answer is one parsed changes.json.
type Answer struct {
	Header
	Entries []Entry
	byPath  map[string]*Entry
}

// Paths returns the answer's paths in order.
func (a *Answer) Paths() []string {
	out := make([]string, len(a.Entries))
	for i, e := range a.Entries {
		out[i] = e.Path
	}
	return out
}

// Get returns the entry of path, or nil.
func (a *Answer) Get(path string) *Entry { return a.byPath[path] }

// query runs one query through .hsm/changes.json and checks the form of
// the answer: a header whose count matches, known types and ops, paths
// sorted bytewise and unique.
func query(t testing.TB, mnt string) *Answer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "changes.json"))
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return parseAnswer(t, data)
}

func parseAnswer(t testing.TB, data []byte) *Answer {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	if !sc.Scan() {
		t.Fatalf("changes.json is empty")
	}
	a := &Answer{byPath: map[string]*Entry{}}
	if err := json.Unmarshal(sc.Bytes(), &a.Header); err != nil {
		t.Fatalf("changes.json header %q: %v", sc.Bytes(), err)
	}
	var hdr map[string]any
	json.Unmarshal(sc.Bytes(), &hdr)
	for _, k := range []string{"query", "blessed", "recovered", "count"} {
		if _, ok := hdr[k]; !ok {
			t.Errorf("changes.json header %s lacks %q", sc.Bytes(), k)
		}
	}
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("changes.json line %q: %v", sc.Bytes(), err)
		}
		if e.PathB64 != "" {
			raw, err := base64.StdEncoding.DecodeString(e.PathB64)
			if err != nil {
				t.Fatalf("changes.json: bad path_b64 in %q: %v", sc.Bytes(), err)
			}
			e.Path = string(raw)
		}
		checkEntry(t, &e)
		a.Entries = append(a.Entries, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("changes.json: %v", err)
	}
	if a.Count != len(a.Entries) {
		t.Errorf("changes.json header says count %d, but %d paths follow", a.Count, len(a.Entries))
	}
	for i := range a.Entries {
		e := &a.Entries[i]
		if i > 0 && a.Entries[i-1].Path >= e.Path {
			t.Errorf("changes.json paths not sorted bytewise and unique: %q then %q", a.Entries[i-1].Path, e.Path)
		}
		a.byPath[e.Path] = e
	}
	return a
}

var knownOps = map[string]bool{
	"write": true, "truncate": true, "fallocate": true, "copy_file_range": true, "create": true,
	"mknod": true, "mkdir": true, "symlink": true, "link": true, "unlink": true, "rmdir": true,
	"rename": true, "chmod": true, "chown": true, "utimens": true, "setxattr": true, "removexattr": true,
	// "entries": listed because its directory had a directory intent in a run
	// whose fine records may be lost (after a crash or a failed journal write).
	"entries": true,
	// "outside": changed around hsmfs while it did not run (the check at mount)
	"outside": true,
}

var knownTypes = map[string]bool{"file": true, "dir": true, "symlink": true, "other": true, "gone": true}

func checkEntry(t testing.TB, e *Entry) {
	t.Helper()
	if e.Path == "" || strings.HasPrefix(e.Path, "/") || strings.HasPrefix(e.Path, "./") {
		t.Errorf("changes.json: bad path %q", e.Path)
	}
	if !knownTypes[e.Type] {
		t.Errorf("changes.json: %q has unknown type %q", e.Path, e.Type)
	}
	if len(e.Ops) == 0 {
		t.Errorf("changes.json: %q has no ops", e.Path)
	}
	for _, op := range e.Ops {
		if !knownOps[op] {
			t.Errorf("changes.json: %q has unknown op %q", e.Path, op)
		}
	}
	if e.Period == 0 {
		t.Errorf("changes.json: %q has period 0", e.Path)
	}
}

// plain runs one query through .hsm/changes and returns its lines,
// checking that they are sorted bytewise, unique and relative.
func plain(t testing.TB, mnt string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "changes"))
	if err != nil {
		t.Fatalf("plain query: %v", err)
	}
	return parsePlain(t, data)
}

func parsePlain(t testing.TB, data []byte) []string {
	t.Helper()
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Errorf("plain answer does not end with a newline: %q", data)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for i, l := range lines {
		if l == "" || strings.HasPrefix(l, "/") || strings.HasPrefix(l, "./") {
			t.Errorf("plain answer: bad line %q", l)
		}
		if i > 0 && lines[i-1] >= l {
			t.Errorf("plain answer not sorted bytewise and unique: %q then %q", lines[i-1], l)
		}
	}
	return lines
}

// ctl writes one command to .hsm/ctl in one write(2).
func ctl(mnt, command string) error {
	f, err := os.OpenFile(filepath.Join(mnt, ".hsm", "ctl"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(command))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// bless blesses the latest query.
func bless(t testing.TB, mnt string) {
	t.Helper()
	if err := ctl(mnt, "bless\n"); err != nil {
		t.Fatalf("bless: %v", err)
	}
}

// reset runs a query and blesses it, so that the next query lists only
// what happens from now on.
func reset(t testing.TB, mnt string) {
	t.Helper()
	waitClosed(t, mnt)
	query(t, mnt)
	bless(t, mnt)
	if a := query(t, mnt); len(a.Entries) != 0 {
		t.Fatalf("right after a bless, with nothing changing, a query lists %s", some(a.Paths()))
	}
	bless(t, mnt)
}

// waitClosed waits until hsmfs has seen the release of every file that
// was open for writing. close(2) returns before the kernel sends FUSE
// RELEASE (it is asynchronous), and until then hsmfs rightly counts the
// file as open for writing, so a query would record it in the period it
// starts. Tests that want an exact answer wait for the releases first.
func waitClosed(t testing.TB, mnt string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := status(t, mnt)
		n := num(t, st, "open_for_write")
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status still says open_for_write %d 30s after the test closed every file: %v", n, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// status reads .hsm/status.
func status(t testing.TB, mnt string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "status"))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("status %q: %v", data, err)
	}
	return m
}

// num reads a number from status.
func num(t testing.TB, st map[string]any, key string) uint64 {
	t.Helper()
	v, ok := st[key].(float64)
	if !ok {
		t.Fatalf("status has no number %q: %v", key, st)
	}
	return uint64(v)
}

// ---- comparing sets ----

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// setDiff returns what is in a but not in b.
func setDiff(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// samePaths fails the test unless got and want hold the same paths.
func samePaths(t testing.TB, what string, got, want []string) bool {
	t.Helper()
	missing, extra := setDiff(want, got), setDiff(got, want)
	if len(missing) == 0 && len(extra) == 0 {
		return true
	}
	t.Errorf("%s: missing %s, unexpected %s (got %s, want %s)", what, some(missing), some(extra), some(got), some(want))
	return false
}

func hasAll(have, want []string) bool {
	return len(setDiff(want, have)) == 0
}

// plainMatches fails the test unless the plain answer lists what the JSON
// answer does, but for names holding a newline and paths beneath a path
// that is not a directory any more (rsync replaces or deletes that one
// whole, and would stumble over a path beneath a file).
func plainMatches(t testing.TB, what, mnt string, plainPaths []string, a *Answer) {
	t.Helper()
	if extra := setDiff(plainPaths, a.Paths()); len(extra) > 0 {
		t.Errorf("%s: the plain answer lists %s, which changes.json does not", what, some(extra))
	}
	var lacks []string
	for _, p := range setDiff(a.Paths(), plainPaths) {
		if strings.Contains(p, "\n") {
			continue
		}
		ok := false
		for q := p; strings.Contains(q, "/"); {
			q = q[:strings.LastIndexByte(q, '/')]
			if e := a.Get(q); e != nil && e.Type != "dir" {
				ok = true
				break
			}
			if fi, err := os.Lstat(filepath.Join(mnt, q)); err == nil && !fi.IsDir() {
				ok = true // shadowed now; its ancestor changed earlier
				break
			}
		}
		if !ok {
			lacks = append(lacks, p)
		}
	}
	if len(lacks) > 0 {
		t.Errorf("%s: the plain answer lacks %s, which changes.json lists", what, some(lacks))
	}
}

// some quotes at most 20 of ps, for a message.
func some(ps []string) string {
	ps = sorted(ps)
	if len(ps) <= 20 {
		return fmt.Sprintf("%q", ps)
	}
	return fmt.Sprintf("%q and %d more", ps[:20], len(ps)-20)
}
