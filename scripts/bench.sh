#!/usr/bin/env bash
# make bench / make bench-short: the raw BACKING directory vs the go-fuse
# example loopback vs hsmfs, interleaved in one run. Every option is passed
# to bin/hsmfs-bench (bash scripts/bench.sh --help); docs/performance.md
# explains the workloads and the table. Results: bench-results/latest.*.
#
# The bench binary unmounts everything it mounted, also on ^C; the trap
# below is the backstop, should it die before it could.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

args=("$@")
parent=/var/tmp
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	-h | --help | -help)
		go build -o bin/hsmfs-bench ./tools/cmd/hsmfs-bench
		exec bin/hsmfs-bench --help
		;;
	--backing-dir | -backing-dir) parent="${args[i + 1]:-}" ;;
	--backing-dir=* | -backing-dir=*) parent="${args[i]#*=}" ;;
	esac
done

if [[ $(id -u) -ne 0 ]]; then
	echo "bench: run as root (FUSE mounts, drop_caches, loop devices)" >&2
	exit 1
fi

[[ -x bin/hsmfs ]] || make --no-print-directory build
go build -o bin/loopback github.com/hanwen/go-fuse/v2/example/loopback
go build -o bin/hsmfs-bench ./tools/cmd/hsmfs-bench

mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd -P)/hsmfs-bench.XXXXXX")

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	local left
	left=$(awk -v w="$work" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	if [[ -n $left ]]; then
		echo "bench: unmounting what was left mounted:" $left >&2
		for m in $left; do
			umount "$m" 2>/dev/null || sleep 1
			if mountpoint -q "$m"; then
				umount "$m" 2>/dev/null || umount -l "$m" || true
			fi
		done
	fi
	rm -rf --one-file-system "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

bin/hsmfs-bench --work "$work" "${args[@]}"
