#!/usr/bin/env bash
# The quick start: mount hsmfs over a demo directory, change things, ask
# what changed, bless the answer, keep a mirror with hsmfs sync, and
# unmount. make demo runs scripts/deps.sh demo first (fuse3, rsync).
set -euo pipefail
HSMFS=${1:-bin/hsmfs}
HSMFS=$(readlink -f "$HSMFS")
for tool in fusermount3 rsync; do
	if ! command -v "$tool" >/dev/null; then
		echo "demo: $tool is missing: run bash scripts/deps.sh demo (as root), or install fuse3 and rsync" >&2
		exit 1
	fi
done
DEMO=${DEMO_DIR:-$(mktemp -d /tmp/hsmfs-demo.XXXXXX)}
mkdir -p "$DEMO/data" "$DEMO/mnt"
echo "old" > "$DEMO/data/old.txt"
mkdir -p "$DEMO/data/photos" && echo "jpeg" > "$DEMO/data/photos/cat.jpg"

# run shows a command as one would type it, then runs it; sh_run does so
# for a command line with redirections.
run() { echo "\$ $*"; "$@"; }
sh_run() { echo "\$ $1"; sh -c "$1"; }
# The cleanup leaves the mount first: a shell inside it keeps it busy.
cleanup() {
	cd /
	if mountpoint -q "$DEMO/mnt"; then
		"$HSMFS" umount "$DEMO/mnt" || echo "demo: could not unmount $DEMO/mnt; run: $HSMFS umount $DEMO/mnt" >&2
	fi
}
trap cleanup EXIT

run "$HSMFS" mount --journal "$DEMO/journal" "$DEMO/data" "$DEMO/mnt"
cd "$DEMO/mnt"
echo "# work in the mount as in any directory"
sh_run 'echo hello > notes.txt'
run mkdir reports
sh_run 'echo q3 > reports/q3.txt'
run mv photos pictures
run rm old.txt
echo "# which paths changed since the last bless?"
run cat .hsm/changes
echo "# copy them (rsync -a -I --files-from=... --delete-missing-args --force), then bless"
sh_run 'echo bless > .hsm/ctl'
echo "# after the bless nothing is pending"
run cat .hsm/changes
sh_run 'echo more >> notes.txt'
run cat .hsm/changes
echo "# hsmfs sync does all three: query, rsync, bless (the first time it copies the whole tree)"
run "$HSMFS" sync . "$DEMO/mirror"
sh_run 'echo again >> notes.txt'
run "$HSMFS" sync . "$DEMO/mirror"
run cat "$DEMO/mirror/notes.txt"
run "$HSMFS" status .
cd /
run "$HSMFS" umount "$DEMO/mnt"
trap - EXIT
echo "# demo files are in $DEMO"
