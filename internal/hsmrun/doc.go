// Package hsmrun is hsmfs hsm run, the HSM's policy daemon (Robinhood's
// job, built in): a named consumer of a mount that archives files whose
// last change is old enough, and releases archived files, least recently
// opened first, while BACKING's file system is too full.
//
// The change feed says what to archive: every file that an answer lists
// becomes a candidate, kept until it is archived, gone, or refused. Only
// a full answer (the consumer's first, or after a reset) walks the tree.
//
// # Durability
//
// The candidates and the files archived (by inode, with their latest
// path) are kept in a state file, written (synced, then renamed over the
// old one) before each bless: an answer is blessed only once the files
// it lists are in the state file, so a crash of hsm run loses none; its
// next round starts from the state file and the next answer. Archive and
// release are the mount's transitions, each durable when the command
// returns (internal/hsm).
//
// # Concurrency
//
// A Runner is used by one goroutine; a round's archives and releases run
// Jobs at a time, each on its own file, and report back through a
// channel.
package hsmrun
