#!/usr/bin/env bash
# The quick start: mount hsmfs over a demo directory, change things, ask
# what changed, bless the answer, and unmount.
set -euo pipefail
HSMFS=${1:-bin/hsmfs}
HSMFS=$(readlink -f "$HSMFS")
DEMO=${DEMO_DIR:-$(mktemp -d /tmp/hsmfs-demo.XXXXXX)}
mkdir -p "$DEMO/data" "$DEMO/mnt"
echo "old" > "$DEMO/data/old.txt"
mkdir -p "$DEMO/data/photos" && echo "jpeg" > "$DEMO/data/photos/cat.jpg"

run() { echo "\$ $*"; "$@"; }
cleanup() { mountpoint -q "$DEMO/mnt" && "$HSMFS" umount "$DEMO/mnt" || true; }
trap cleanup EXIT

run "$HSMFS" mount --journal "$DEMO/journal" "$DEMO/data" "$DEMO/mnt"
cd "$DEMO/mnt"
echo "# work in the mount as in any directory"
run sh -c 'echo hello > notes.txt'
run mkdir reports
run sh -c 'echo q3 > reports/q3.txt'
run mv photos pictures
run rm old.txt
echo "# which paths changed since the last bless?"
run cat .hsm/changes
echo "# copy them (rsync -a -I --files-from=... --delete-missing-args --force), then bless"
run sh -c 'echo bless > .hsm/ctl'
echo "# after the bless nothing is pending"
run cat .hsm/changes
run sh -c 'echo more >> notes.txt'
run cat .hsm/changes
echo "# hsmfs sync does all three: query, rsync, bless (the first time it copies the whole tree)"
run "$HSMFS" sync . "$DEMO/mirror"
run sh -c 'echo again >> notes.txt'
run "$HSMFS" sync . "$DEMO/mirror"
run cat "$DEMO/mirror/notes.txt"
run "$HSMFS" status .
cd /
run "$HSMFS" umount "$DEMO/mnt"
trap - EXIT
echo "# demo files are in $DEMO"
