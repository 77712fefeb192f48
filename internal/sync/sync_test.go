package sync

import (
	"io"

	"bytes"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listOf writes the list of an answer's text.
func listOf(text string, list io.Writer) (answer, error) {
	a, err := hsmctl.ReadAnswer(strings.NewReader(text))
	if err != nil {
		return answer{}, err
	}
	return writeList(a, list)
}

// TestWriteList: the list given to rsync holds every path of the answer,
// NUL-terminated, names with a newline and non-UTF-8 names included, but
// not a path beneath an ancestor that the answer lists as a non-directory.
func TestWriteList(t *testing.T) {
	answer := `{"blessed":3,"count":9,"query":5,"recovered":false}
{"path":"a","type":"file","ops":["create"],"period":4}
{"path":"a-b","type":"file","ops":["create"],"period":4}
{"path":"a/x","type":"gone","ops":["unlink"],"period":4}
{"path":"a/x/y","type":"gone","ops":["unlink"],"period":4}
{"path":"d","type":"dir","ops":["mkdir"],"period":4}
{"path":"d/new\nline","type":"file","ops":["create"],"period":4}
{"path":"\ufffd","path_b64":"/w==","type":"file","ops":["create"],"period":4}
{"path":"l","type":"symlink","ops":["symlink"],"period":4}
{"path":"l/z","type":"gone","ops":["unlink"],"period":4}
`
	var list bytes.Buffer
	ans, err := listOf(answer, &list)
	if err != nil {
		t.Fatal(err)
	}
	if ans.id != 5 || ans.blessed != 3 || ans.paths != 6 {
		t.Errorf("answer %+v, want id 5, blessed 3, 6 paths", ans)
	}
	want := "a\x00a-b\x00d\x00d/new\nline\x00\xff\x00l\x00"
	if list.String() != want {
		t.Errorf("list %q, want %q", list.String(), want)
	}
}

func TestWriteListRejects(t *testing.T) {
	for name, answer := range map[string]string{
		"empty":        "",
		"no query id":  `{"blessed":3,"count":0}` + "\n",
		"short answer": `{"blessed":3,"count":2,"query":5}` + "\n" + `{"path":"a","type":"file"}` + "\n",
		"bad line":     `{"blessed":3,"count":1,"query":5}` + "\n" + `{"path":` + "\n",
		"bad base64":   `{"blessed":3,"count":1,"query":5}` + "\n" + `{"path":"?","path_b64":"!!"}` + "\n",
	} {
		if ans, err := listOf(answer, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: accepted, %+v", name, ans)
		}
	}
	// The root itself is "." for rsync.
	var list bytes.Buffer
	if _, err := listOf(`{"count":1,"query":1}`+"\n"+`{"path":"","type":"dir"}`+"\n", &list); err != nil || list.String() != ".\x00" {
		t.Errorf("the root: %q, %v", list.String(), err)
	}
}

// TestOutFilter: rsync's output goes on but for the stats block, which
// gives the numbers; progress lines (ended by \r) go on whole, even when
// they arrive in pieces.
func TestOutFilter(t *testing.T) {
	var w bytes.Buffer
	var st copyStats
	f := outFilter(&w, &st)
	out := "\r      1,234  10%    1.00MB/s    0:00:01 (xfr#1, to-chk=2/3)\r" +
		"    123,459 100%  117.74MB/s    0:00:00 (xfr#2, to-chk=0/3)\n\n" +
		"Number of files: 4 (reg: 2, dir: 2)\nNumber of created files: 4\n" +
		"Total file size: 123,459 bytes\nTotal transferred file size: 1.234.567 bytes\n" +
		"Literal data: 123,459 bytes\nMatched data: 0 bytes\nFile list size: 0\n" +
		"sent 123,689 bytes  received 65 bytes  247,508.00 bytes/sec\ntotal size is 123,459  speedup is 1.00\n" +
		">f+++++++++ a file\nlast line without newline"
	for i := 0; i < len(out); i += 7 {
		f.Write([]byte(out[i:min(i+7, len(out))]))
	}
	f.flush()
	want := "      1,234  10%    1.00MB/s    0:00:01 (xfr#1, to-chk=2/3)\r" +
		"    123,459 100%  117.74MB/s    0:00:00 (xfr#2, to-chk=0/3)\n" +
		">f+++++++++ a file\nlast line without newline\n"
	if w.String() != want {
		t.Errorf("passed on %q, want %q", w.String(), want)
	}
	if st.files != 4 || st.transferred != 1234567 {
		t.Errorf("stats %+v, want 4 files, 1234567 bytes", st)
	}
}

func TestErrFilter(t *testing.T) {
	var w bytes.Buffer
	var st copyStats
	f := errFilter(&w, &st)
	f.Write([]byte("file has vanished: \"/m/d\"\nrsync: [sender] link_stat \"/m/x\" failed\nfile has van"))
	f.Write([]byte("ished: \"/m/d/e\"\nrsync warning: some files vanished before they could be transferred (code 24) at main.c(1394) [sender=3.5.0]\n"))
	f.flush()
	if w.String() != "rsync: [sender] link_stat \"/m/x\" failed\n" || st.vanished != 2 {
		t.Errorf("passed on %q, counted %d vanished", w.String(), st.vanished)
	}
}

func TestListedName(t *testing.T) {
	for line, want := range map[string]string{
		"drwxr-xr-x          4,096 2026/11/29 15:08:48 .":          ".",
		"-rw-r--r--             11 2026/11/29 15:10:25 .hsm":       ".hsm",
		"-rw-r--r--              3 2026/11/29 15:08:48  two words": " two words",
		"lrwxrwxrwx              3 2026/11/29 15:13:01 sl -> top":  "sl -> top",
		"garbage": "",
	} {
		if got := listedName(line); got != want {
			t.Errorf("listedName(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestPaths(t *testing.T) {
	for dest, remote := range map[string]bool{
		"host:path": true, "user@host:/abs": true, "host::module": true, "rsync://host/m": true,
		"/abs/dir": false, "rel/dir": false, "./a:b": false, "dir/with:colon": false,
	} {
		if isRemote(dest) != remote {
			t.Errorf("isRemote(%q) = %v", dest, !remote)
		}
	}
	for p, want := range map[string]string{"/d": "/d/", "/d/": "/d/", "host:": "host:./", "host:p": "host:p/"} {
		if got := withSlash(p); got != want {
			t.Errorf("withSlash(%q) = %q, want %q", p, got, want)
		}
	}
}

// TestCheckOverlap: a DEST inside MOUNTPOINT or BACKING, or holding one,
// is refused, also through a symlink and when DEST does not exist yet.
func TestCheckOverlap(t *testing.T) {
	base := t.TempDir()
	mnt, backing, other := filepath.Join(base, "mnt"), filepath.Join(base, "backing"), filepath.Join(base, "other")
	for _, d := range []string{mnt, backing, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	for _, dest := range []string{mnt, mnt + "/", filepath.Join(mnt, "x", "y"), filepath.Join(link, "new"),
		backing, filepath.Join(backing, "d"), base, "/"} {
		if err := checkOverlap(dest, mnt, backing); err == nil {
			t.Errorf("DEST %s accepted", dest)
		}
	}
	for _, dest := range []string{other, filepath.Join(other, "new"), filepath.Join(base, "mnt2")} {
		if err := checkOverlap(dest, mnt, backing); err != nil {
			t.Errorf("DEST %s: %v", dest, err)
		}
	}
}

func TestLeadingNumber(t *testing.T) {
	for s, want := range map[string]int64{"123,459 bytes": 123459, "0 bytes": 0, "4 (reg: 2, dir: 2)": 4, " 1'000 bytes": 1000} {
		if got := leadingNumber(s); got != want {
			t.Errorf("leadingNumber(%q) = %d, want %d", s, got, want)
		}
	}
}

// One DEST is one name in "by sync DEST", however it is spelt.
func TestBlessedBy(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for _, same := range [][2]string{
		{real, real + "/"}, {real, link}, {real, link + "/"}, {real, filepath.Join(base, "x", "..", "real")},
		{"host:dir", "host:dir/"}, {"host:/srv/m", "host:/srv//m/"},
	} {
		if a, b := blessedBy(same[0]), blessedBy(same[1]); a != b {
			t.Errorf("%q and %q bless as %q and %q", same[0], same[1], a, b)
		}
	}
	if a, b := blessedBy("host:a"), blessedBy("other:a"); a == b {
		t.Errorf("two hosts bless alike: %q", a)
	}
}
