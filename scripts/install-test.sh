#!/usr/bin/env bash
# Checks `make install` and `make uninstall` into a temporary DESTDIR:
# the binary, hsmfs(1) (rendered with man -l where man is installed) and
# the systemd unit, pointing at PREFIX/bin/hsmfs; uninstall leaves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail() { echo "install-test: FAIL: $*" >&2; exit 1; }

for prefix in /usr/local /usr; do
	make -s install DESTDIR="$dest" PREFIX="$prefix" >/dev/null
	echo "install-test: make install DESTDIR=\$tmp PREFIX=$prefix installed:"
	(cd "$dest" && find . -type f -printf '  %m %p\n' | sort)
	bin=$dest$prefix/bin/hsmfs
	page=$dest$prefix/share/man/man1/hsmfs.1
	unit=$dest$prefix/lib/systemd/system/hsmfs@.service
	for f in "$bin" "$page" "$unit"; do
		[[ -f $f ]] || fail "missing ${f#"$dest"}"
	done
	[[ -x $bin ]] || fail "hsmfs is not executable"
	"$bin" --version | grep -q '^hsmfs ' || fail "the installed hsmfs does not run"
	grep -q "^ExecStart=$prefix/bin/hsmfs mount -f " "$unit" || fail "the unit does not run $prefix/bin/hsmfs"
	grep -q "^ExecStop=$prefix/bin/hsmfs umount " "$unit" || fail "the unit does not stop with $prefix/bin/hsmfs"
	grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
	# The page holds every command's --help text.
	for c in mount umount changes bless checkpoint status journal; do
		grep -q "^\.SS \"hsmfs $c\"" "$page" || fail "hsmfs(1) lacks hsmfs $c"
	done
	if command -v man >/dev/null && command -v nroff >/dev/null; then
		out=$(MANPAGER=cat MANWIDTH=80 man -l "$page" 2>&1) || fail "man -l: $out"
		grep -q -- '--journal DIR, -o journal=DIR' <<<"$out" || fail "man -l does not render the mount options: $out"
		echo "install-test: man -l renders hsmfs(1) ($(wc -l <<<"$out") lines)"
	else
		echo "install-test: man or nroff is not installed: hsmfs(1) not rendered"
	fi
	make -s uninstall DESTDIR="$dest" PREFIX="$prefix" >/dev/null
	left=$(find "$dest" -type f)
	[[ -z $left ]] || fail "make uninstall left: $left"
done
echo "install-test: ok"
