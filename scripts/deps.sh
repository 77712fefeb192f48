#!/usr/bin/env bash
# Installs what hsmfs's tests need and a fresh Debian machine lacks:
# fuse3 (fusermount3, and mount.fuse3 for the mount(8) tests), rsync
# (the consumer the e2e tests drive), xfsprogs and e2fsprogs
# (loop-mounted journal/backing filesystems for the fault and power-cut
# tests), util-linux (unshare), fio (benchmarks), acl (setfacl: the cache
# tests change modes through ACLs). Safe to run repeatedly.
# "deps.sh demo" installs only what make demo needs: fuse3 and rsync.
set -euo pipefail

need=()
if [[ ${1:-} == demo ]]; then
	command -v fusermount3 >/dev/null || need+=(fuse3)
	command -v rsync >/dev/null || need+=(rsync)
else
	command -v fusermount3 >/dev/null || need+=(fuse3)
	[[ -x /sbin/mount.fuse3 ]] || need+=(fuse3)
	command -v rsync >/dev/null || need+=(rsync)
	command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
	command -v xfs_io >/dev/null || need+=(xfsprogs)
	command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
	command -v losetup >/dev/null || need+=(mount)
	command -v unshare >/dev/null || need+=(util-linux) # mount(8) tests in a private mount namespace
	command -v fio >/dev/null || need+=(fio)
	command -v git >/dev/null || need+=(git)
	command -v sqlite3 >/dev/null || need+=(sqlite3)
	command -v gcc >/dev/null || need+=(gcc)
	[[ -e /usr/include/stdio.h ]] || need+=(libc6-dev)
	command -v make >/dev/null || need+=(make)
	command -v python3 >/dev/null || need+=(python3)
	command -v patch >/dev/null || need+=(patch)
	command -v diff >/dev/null || need+=(diffutils)
	command -v setfacl >/dev/null || need+=(acl)
fi

if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		echo "deps: missing packages: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	if [[ -x /usr/local/go/bin/go ]]; then
		echo "deps: go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "deps: Go 1.26.8 or later is needed (https://go.dev/dl/)" >&2
	fi
	exit 1
fi
if [[ ! -e /dev/fuse ]]; then
	echo "deps: /dev/fuse is missing: load the fuse module (modprobe fuse)" >&2
	exit 1
fi
