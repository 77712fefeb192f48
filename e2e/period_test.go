package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestPeriods: a query starts the period that is its id; a bless of ID
// discards the periods before ID and keeps ID and later ones; "period" is
// the first unblessed period that recorded a path.
func TestPeriods(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	writeFile(t, p("f"), "1")
	waitClosed(t, m.Mnt)
	q1 := query(t, m.Mnt)
	f1 := q1.Get("f")
	if f1 == nil || f1.Period >= q1.Query {
		t.Fatalf("query %d: f %+v, want it in a period before the query's", q1.Query, f1)
	}
	writeFile(t, p("f"), "2")
	writeFile(t, p("g"), "3")
	waitClosed(t, m.Mnt)
	q2 := query(t, m.Mnt)
	if q2.Query <= q1.Query {
		t.Errorf("query ids %d then %d: want increasing", q1.Query, q2.Query)
	}
	if e := q2.Get("f"); e == nil || e.Period != f1.Period {
		t.Errorf("query %d: f %+v, want period %d (the first unblessed period that recorded it)", q2.Query, e, f1.Period)
	}
	if e := q2.Get("g"); e == nil || e.Period != q1.Query {
		t.Errorf("query %d: g %+v, want period %d (the period that query %d started)", q2.Query, e, q1.Query, q1.Query)
	}
	// bless q1: the period before it goes, q1's period stays.
	must(t, ctl(m.Mnt, "bless "+strconv.FormatUint(q1.Query, 10)+"\n"))
	q3 := query(t, m.Mnt)
	samePaths(t, "after bless of the first query", q3.Paths(), []string{"f", "g"})
	if e := q3.Get("f"); e == nil || e.Period != q1.Query {
		t.Errorf("query %d: f %+v, want period %d now that the earlier one is blessed", q3.Query, e, q1.Query)
	}
	if q3.Blessed != q1.Query {
		t.Errorf("query %d: header blessed %d, want %d", q3.Query, q3.Blessed, q1.Query)
	}
	bless(t, m.Mnt)
	samePaths(t, "after bless of the latest query", query(t, m.Mnt).Paths(), nil)
}

// TestRepeatedQuery: with nothing changing and nothing blessed in
// between, a second query answers what the first did. Here a directory
// was renamed, beside an untouched file blessed before.
func TestRepeatedQuery(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	must(t, os.Mkdir(p("old"), 0o755))
	writeFile(t, p("old/x"), "x")
	writeFile(t, p("y"), "y")
	reset(t, m.Mnt)
	must(t, os.Rename(p("old"), p("new")))
	q1 := query(t, m.Mnt)
	q2 := query(t, m.Mnt)
	samePaths(t, "the second query", q2.Paths(), q1.Paths())
	for _, a := range []*Answer{q1, q2} {
		if a.Get("y") != nil {
			t.Errorf("query %d lists y, blessed before and untouched since: %+v", a.Query, *a.Get("y"))
		}
	}
}

// TestNonUTF8Name: a name that is not valid UTF-8 comes as path_b64 in
// changes.json, and raw in the plain answer.
func TestNonUTF8Name(t *testing.T) {
	m := mount(t)
	name := "bad\xffname"
	writeFile(t, filepath.Join(m.Mnt, name), "x")
	waitClosed(t, m.Mnt)
	if got := plain(t, m.Mnt); !slices.Equal(got, []string{name}) {
		t.Errorf("plain answer %q, want %q", got, name)
	}
	data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes.json"))
	must(t, err)
	if !strings.Contains(string(data), `"path_b64":"`+base64.StdEncoding.EncodeToString([]byte(name))+`"`) {
		t.Errorf("changes.json has no path_b64 for %q:\n%s", name, data)
	}
	samePaths(t, "changes.json", parseAnswer(t, data).Paths(), []string{name})
}

// TestReadOnly: -o ro reaches the kernel: modifications fail with EROFS,
// reads and queries work, nothing is recorded.
func TestReadOnly(t *testing.T) {
	b, mn, j := newDirs(t)
	writeFile(t, filepath.Join(b, "f"), "content\n")
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j), withArgs("-o", "ro"))
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	wantErrno(t, "create", os.WriteFile(p("new"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "write", os.WriteFile(p("f"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(p("d"), 0o755), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(p("f"), 0o600), syscall.EROFS)
	if got := readFile(t, p("f")); got != "content\n" {
		t.Errorf("read f: %q", got)
	}
	samePaths(t, "query on a read-only mount", query(t, m.Mnt).Paths(), nil)
}

// TestDefaultJournal: without --journal, root's journal lives under
// /var/lib/hsmfs/, one per BACKING, and is found again by the next mount.
func TestDefaultJournal(t *testing.T) {
	if _, err := os.Stat("/var/lib/hsmfs"); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove("/var/lib/hsmfs") }) // only if empty
	}
	b, mn, _ := newDirs(t)
	r := hsm(t, "mount", b, mn)
	if r.code != 0 {
		t.Fatalf("hsmfs mount without --journal: %v", r)
	}
	st := status(t, mn)
	j, _ := st["journal"].(string)
	t.Cleanup(func() {
		if isMounted(mn) {
			if r := hsm(t, "umount", mn); r.code != 0 {
				forceUnmount(t, mn, int(num(t, st, "pid")))
			}
		}
		if strings.HasPrefix(j, "/var/lib/hsmfs/") {
			os.RemoveAll(j)
			os.Remove(j + ".log")
		}
	})
	if !strings.HasPrefix(j, "/var/lib/hsmfs/") {
		t.Fatalf("root's default journal is %q, want it under /var/lib/hsmfs/", j)
	}
	writeFile(t, filepath.Join(mn, "f"), "x")
	if r := hsm(t, "umount", mn); r.code != 0 {
		t.Fatalf("hsmfs umount: %v", r)
	}
	// Another BACKING gets another journal; the same BACKING its own again.
	b2, mn2, _ := newDirs(t)
	if r := hsm(t, "mount", b2, mn2); r.code != 0 {
		t.Fatalf("hsmfs mount of another BACKING without --journal: %v", r)
	}
	j2, _ := status(t, mn2)["journal"].(string)
	if r := hsm(t, "umount", mn2); r.code != 0 {
		t.Errorf("hsmfs umount: %v", r)
	}
	if strings.HasPrefix(j2, "/var/lib/hsmfs/") {
		os.RemoveAll(j2)
		os.Remove(j2 + ".log")
	}
	if j2 == j {
		t.Errorf("two BACKING directories share the default journal %s", j)
	}
	if r := hsm(t, "mount", b, mn); r.code != 0 {
		t.Fatalf("hsmfs mount again: %v", r)
	}
	if got, _ := status(t, mn)["journal"].(string); got != j {
		t.Errorf("the same BACKING mounted again uses journal %s, before %s", got, j)
	}
	if a := query(t, mn); !slices.Contains(a.Paths(), "f") {
		t.Errorf("the default journal lost its records: %q", a.Paths())
	}
	if r := hsm(t, "umount", mn); r.code != 0 {
		t.Errorf("hsmfs umount: %v", r)
	}
}

// TestBlessForgets: once a query that listed a change is blessed, the
// change is not listed again. Here the change leaves a deleted path
// beneath a name that is now a file (the plain answer rightly leaves
// such a path out: rsync replaces the file whole).
func TestBlessForgets(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	must(t, os.Mkdir(p("a"), 0o755))
	writeFile(t, p("a/x"), "x")
	reset(t, m.Mnt)
	must(t, os.RemoveAll(p("a")))
	writeFile(t, p("a"), "now a file")
	waitClosed(t, m.Mnt)
	a := query(t, m.Mnt)
	pathsBetween(t, "the query", a.Paths(), []string{"a"}, []string{"a/x"})
	bless(t, m.Mnt)
	for i := 0; i < 2; i++ {
		if a := query(t, m.Mnt); len(a.Entries) != 0 {
			t.Errorf("query %d, after the bless of every change: lists %s (%+v)", a.Query, some(a.Paths()), a.Entries)
		}
		bless(t, m.Mnt)
	}
}
