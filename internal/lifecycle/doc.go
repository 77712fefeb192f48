// Package lifecycle is the hsmfs daemon's life: Serve takes a mount from
// BACKING's lock to a clean unmount, and wires the packages together
// (backing, journal, checkpoint, fs, the outside check, metrics).
// cmd/hsmfs keeps the flags, the re-execution and systemd.
//
// # The order of the steps is a durability argument
//
//  1. BACKING's lock (backing.Tree.Lock) before the journal: one tracker
//     per directory, so no second journal records what the first one's
//     consumers must see.
//  2. The journal and the tracker, recovering after an unclean end,
//     before anything else reads or writes records.
//  3. The check for changes made while hsmfs did not run, and their
//     records, before the mount goes live: nothing can change BACKING
//     through the mount before those changes are durable records.
//     Every bless's syncfs of BACKING also syncs the log of names that
//     the next check replays (Tree.SetAfterSync), so what a bless
//     discards is never needed by the check.
//  4. The mount, then ready: a consumer that reads after ready finds the
//     outside records.
//  5. At the end, the tracker closes (its clean flag saved) before the
//     tree index of the clean end is written beside the journal: an
//     index is trusted only with its log, and the next mount checks
//     against it.
//
// A step that fails undoes the ones before it, in reverse order, and the
// error reaches ready: the mount never goes live half made.
//
// # Concurrency
//
// Serve runs on its caller's goroutine until the mount ends; a signal
// handler goroutine unmounts on SIGINT and SIGTERM. The outside check's
// log of names is written from FUSE request goroutines under its own
// lock (internal/outside).
package lifecycle
