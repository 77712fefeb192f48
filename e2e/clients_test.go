package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRealClients runs real programs on the mount, as users do, and the
// same programs on a plain directory beside it: tar unpacking links,
// modes and a fifo, git committing, branching, merging and packing (gc
// renames and removes hundreds of files) and a clone with checkouts,
// sqlite3 in rollback-journal and WAL modes (the WAL's shared memory is a
// shared mapping), editors' atomic saves (sed -i, a Python
// write-fsync-rename), C builds with make (-j8 too) and gcc that run
// what they built, rsync -aHX writing into the mount, fio writing and verifying
// through write(2), a shared mapping and O_DIRECT, cp -a, mv and patch. Each
// step must succeed and print the same on both; after each, the answer
// fed to real rsync must make the consumer's copy equal the mount, and
// the mount must hold what the plain directory holds (times aside:
// programs stamp them).
func TestRealClients(t *testing.T) {
	m := mount(t)
	top := t.TempDir()
	ref := filepath.Join(top, "ref")
	dest := filepath.Join(top, "dest")
	home := filepath.Join(top, "home")
	for _, d := range []string{ref, dest, home} {
		must(t, os.Mkdir(d, 0o755))
	}
	src := filepath.Join(top, "src.tar")
	makeSourceTar(t, filepath.Join(top, "srctree"), src)
	repo := filepath.Join(top, "repo")
	if r := run(t, nil, "rsync", "-a", m.Mnt+"/", dest+"/"); r.code != 0 {
		t.Fatalf("first copy: %v", r)
	}
	query(t, m.Mnt)
	bless(t, m.Mnt)
	env := []string{"HOME=" + home, "SRC=" + src, "SRCTREE=" + filepath.Join(top, "srctree"), "REPO=" + repo, "LC_ALL=C", "TZ=UTC",
		"GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@example.org", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z",
		"GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@example.org", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z",
		"GIT_CONFIG_NOSYSTEM=1", "PATH=" + os.Getenv("PATH")}
	runStep(t, top, env, makeRepo)
	for _, s := range clientSteps {
		t.Run(s.name, func(t *testing.T) {
			want := runStep(t, ref, env, s.script)
			got := runStep(t, m.Mnt, env, s.script)
			if got != want {
				t.Errorf("on the mount it printed:\n%s\non a plain directory:\n%s", got, want)
			}
			waitClosed(t, m.Mnt)
			list, r := consume0(t, m.Mnt, dest)
			rsyncOK(t, r, list)
			if !sameTree(t, s.name+": copy vs mount", snapshot(t, m.Mnt, snapOpts{withXattrs: true}), snapshot(t, dest, snapOpts{withXattrs: true}), "mount", "copy") {
				t.Logf("the answer (%d paths):\n  %s", len(list), strings.Join(list, "\n  "))
			}
			bless(t, m.Mnt)
			sameTree(t, s.name+": mount vs plain directory", timeless(snapshot(t, m.Mnt, snapOpts{withXattrs: true})),
				timeless(snapshot(t, ref, snapOpts{withXattrs: true})), "mount", "plain directory")
		})
	}
}

// clientStep is a shell script that a step runs in the mount and in the
// plain directory; what it prints must not depend on which.
type clientStep struct{ name, script string }

var clientSteps = []clientStep{
	{"tar", `
mkdir t && cd t && tar -xpf "$SRC"
tar -cf - --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 . | sha256sum
find . -links +1 -type f | sort`},
	{"git", `
git init -q -b main g && cd g
cp -a ../t/. .
git add -A && git commit -qm one
git checkout -qb topic
echo more >> d1/f1 && git mv d2 d9 && git rm -q d1/f2 && mkdir -p n/m && echo new > n/m/x
git add -A && git commit -qm two
git checkout -q main
echo main >> top && git commit -qam three
git merge -q --no-ff topic -m merge
git gc -q --prune=now
git fsck --full --strict 2>&1
git log --format='%H %T %s'
git status --porcelain --untracked-files=all`},
	{"git-clone", `
git clone -q --no-local "$REPO" clone && cd clone
for r in HEAD~7 HEAD~3 main HEAD~9 main; do git checkout -q "$r"; git status --porcelain; done
git rev-parse HEAD && git ls-files | wc -l && git fsck --strict 2>&1`},
	{"sqlite", `
sqlite3 db 'create table t(k integer primary key, v text);'
for i in 1 2 3; do sqlite3 db "begin; insert into t(v) select printf('%08d-%d', x, $i) from (with recursive c(x) as (select 1 union all select x+1 from c limit 500) select x from c); commit;"; done
sqlite3 db 'pragma journal_mode=wal;' "insert into t(v) values ('w1');" "update t set v = 'u' where k % 7 = 0;" 'delete from t where k % 11 = 0;'
sqlite3 db 'pragma wal_checkpoint(truncate);' >/dev/null
sqlite3 db 'pragma journal_mode=delete;' 'pragma integrity_check;' "select count(*), sum(v = 'u') from t;"
ls`},
	{"atomic-save", `
printf 'a\nb\nc\n' > conf && cp conf conf.orig
sed -i 's/b/B/' conf
python3 - <<'PY'
import os
for i in range(20):
    with open("conf.tmp", "w") as f:
        f.write("round %d\n" % i)
        f.flush()
        os.fsync(f.fileno())
    os.replace("conf.tmp", "conf")
os.link("conf", "conf.bak")
os.replace("conf.orig", "conf.bak")
PY
cat conf conf.bak`},
	{"build", `
mkdir c && cd c
cat > main.c <<'C'
#include <stdio.h>
int add(int, int);
int main(void) { printf("%d\n", add(40, 2)); return 0; }
C
echo 'int add(int a, int b) { return a + b; }' > add.c
printf 'prog: main.o add.o\n\t$(CC) -o $@ main.o add.o\n%%.o: %%.c\n\t$(CC) -O0 -c -o $@ $<\nclean:\n\trm -f prog *.o\n' > Makefile
make -s && ./prog
touch add.c && make -s && ./prog
make -s clean && make -s && ./prog && rm main.o`},
	{"parallel-build", `
mkdir pb && cd pb
for i in $(seq 0 39); do echo "int f$i(void) { return $i; }" > "f$i.c"; done
{
	for i in $(seq 0 39); do echo "int f$i(void);"; done
	echo '#include <stdio.h>'
	echo 'int main(void) { int s = 0;'
	for i in $(seq 0 39); do echo "s += f$i();"; done
	echo 'printf("%d", s); putchar(10); return 0; }'
} > main.c
printf 'OBJS := $(patsubst %%.c,%%.o,$(wildcard *.c))\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n' > Makefile
make -s -j8 && ./prog && rm -f ./*.o && make -s -j8 && ./prog`},
	{"rsync-in", `
mkdir in && rsync -aHX "$SRCTREE/" in/
echo changed >> in/top && rm in/d1/f2 && mkdir in/extra
rsync -aHX --delete "$SRCTREE/" in/
rsync -aHXc --delete --dry-run --itemize-changes "$SRCTREE/" in/
find in -links +1 -type f | sort`},
	{"fio-verify", `
n=0
for e in psync mmap "psync --direct=1" "pvsync2 --fsync=4"; do
	n=$((n + 1))
	fio --name=v --filename=fio.$n --size=4M --rw=randrw --bs=4k --verify=crc32c --verify_fatal=1 --ioengine=$e --minimal >/dev/null
done
rm -f ./*verify.state && ls fio.*`},
	{"cp-mv-patch", `
cp -a t t2 && mv t2 t3 && mv t3/d1 t3/e1
cp -a t3 t4 && diff -r --no-dereference t3 t4 && echo same
echo changed >> t4/top
diff -ruN --no-dereference t3 t4 > p.diff || true
cd t3 && patch -s -p1 < ../p.diff && cd ..
diff -r --no-dereference t3 t4 && echo patched
rm -rf t t4 p.diff && ls`},
}

// consume0 is consume for names that may hold a newline: the answer of
// hsmfs changes -0, given to rsync with --from0, and -X, so that the copy
// keeps xattrs too (an xattr change is listed).
func consume0(t *testing.T, mnt, dest string) ([]string, result) {
	t.Helper()
	r := hsm(t, "changes", "-0", mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs changes -0: %v", r)
	}
	f := filepath.Join(t.TempDir(), "answer")
	must(t, os.WriteFile(f, []byte(r.stdout), 0o644))
	list := strings.Split(strings.TrimSuffix(r.stdout, "\x00"), "\x00")
	return list, run(t, nil, "rsync", "-a", "-I", "-X", "--from0", "--files-from="+f, "--delete-missing-args", "--force", mnt+"/", dest+"/")
}

// makeRepo makes a repository of 12 commits over 30 directories, each
// adding, changing, removing and moving files, for the git-clone step.
const makeRepo = `
git init -q -b main "$REPO" && cd "$REPO"
for c in 0 1 2 3 4 5 6 7 8 9 10 11; do
	for d in $(seq 0 29); do
		mkdir -p "d$d"
		for f in $(seq 0 $((c % 4 + 5))); do echo "$c $d $f" > "d$d/f$f"; done
	done
	[ $((c % 3)) -eq 1 ] && git mv "d$c" "moved$c" && git rm -rqf "d$((c + 10))"
	git add -A && git commit -qm "commit $c"
done`

// runStep runs a step's script with sh in dir; it must succeed.
func runStep(t *testing.T, dir string, env []string, script string) string {
	t.Helper()
	r := runIn(t, dir, env, "sh", "-eu", "-c", script)
	if r.code != 0 {
		t.Fatalf("in %s: %v", dir, r)
	}
	return r.stdout
}

// timeless drops what the comparison of two directories where the same
// programs ran must not look at: times, which programs stamp, and git's
// index, which holds each file's inode number and times (git status
// compares what it says), packs and the list that names them by their
// checksum, whose order of objects may depend on pack-objects' threads
// (git fsck checks them), and fio's files, whose
// blocks carry times (fio verifies them).
func timeless(s map[string]node) map[string]node {
	for p, n := range s {
		n.Mtime = 0
		s[p] = n
		if strings.HasSuffix(p, ".git/index") || strings.Contains(p, ".git/objects/pack/") ||
			strings.HasSuffix(p, ".git/objects/info/packs") || strings.HasPrefix(p, "fio.") {
			delete(s, p)
		}
	}
	return s
}

// makeSourceTar makes a tree with what unpacking must keep (modes, empty
// directories, symlinks, hard links, a file with a space and a newline
// in its name) and packs it into tarball.
func makeSourceTar(t *testing.T, dir, tarball string) {
	t.Helper()
	files := map[string]string{
		"top": "top\n", "d1/f1": "f1\n", "d1/f2": "f2\n", "d2/sub/deep": strings.Repeat("x", 70000),
		"d2/with space": "s\n", "d2/new\nline": "n\n", "exec.sh": "#!/bin/sh\necho hi\n",
	}
	for p, c := range files {
		must(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644))
	}
	must(t, os.Chmod(filepath.Join(dir, "exec.sh"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "d1/f2"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o700))
	must(t, os.Symlink("d1/f1", filepath.Join(dir, "link")))
	must(t, os.Symlink("nowhere", filepath.Join(dir, "d2/dangling")))
	must(t, os.Link(filepath.Join(dir, "d1/f1"), filepath.Join(dir, "d2/hard")))
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(t, unix.Setxattr(filepath.Join(dir, "d1/f1"), "user.origin", []byte("tar"), 0))
	if r := runIn(t, dir, nil, "tar", "-cf", tarball, "."); r.code != 0 {
		t.Fatalf("tar: %v", r)
	}
}
