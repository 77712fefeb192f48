// Package checkpointtest is the contract of checkpoint.Store as a test
// suite, run against every Store: the real badger journal (journal's
// tests) and the tracker's in-memory fake (checkpoint's), as restic runs
// one backend suite against every backend. The fake models durability as
// the interface documents it and the tracker's tests trust it; this suite
// is what makes that trust good for the real journal too.
//
// It holds no state and starts no goroutine beyond its tests'. What it
// checks is only what the Store interface promises: what survives a
// process end (Reopen) is what returned; power cuts are the e2e crash
// tests' (a real disk cut under the real journal).
package checkpointtest
