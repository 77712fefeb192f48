// Package e2e holds the end-to-end tests of hsmfs: every test mounts the
// real binary over FUSE and checks it, through the mount, against the
// contract as docs/usage.md states it.
//
// Run them as root with /dev/fuse available:
//
//	go test -race -count=1 ./e2e/
//	HSMFS_RACE=1 go test -race -count=1 ./e2e/   # the daemon built with -race too
//
// Environment:
//
//	HSMFS_RACE=1            build the hsmfs binary with -race
//	HSMFS_BIN=/path/hsmfs   use a prebuilt binary instead of building one
//	HSMFS_E2E_SEED=N        seed of TestRsyncConsumer (logged by every run)
//	HSMFS_E2E_ROUNDS=N      rounds of TestRsyncConsumer (default 30)
//	HSMFS_E2E_OPS=N         modifications per round (default 50)
//	HSMFS_E2E_TRACE=1       TestRsyncConsumer logs every modification
//	HSMFS_E2E_DEBUG=1       mount with --debug (every FUSE request in the log)
//	HSMFS_E2E_LOGDIR=DIR    keep the daemon log of every failed test in DIR
//	HSMFS_POSIXDIFF_STEPS, _SEEDS, _SEED  size of TestPosixDiff (make posixtest)
//	HSMFS_STORM_WRITERS, _OPS, _ROUNDS, _FACTOR  size of TestRenameStorm
//	                        (make stormtest)
package e2e
