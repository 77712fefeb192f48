// Package hsmctl owns the control protocol of an hsmfs mount: the files
// under MOUNTPOINT/.hsm, the commands that ctl takes, the types of the
// changes.json header and entries and of status, and the client that
// every program of the project uses to speak it (the command line,
// hsmfs sync, hsmfs export, the bench). fs serves the same protocol: it
// parses commands with ParseCommand and renders status as a Status.
//
// # The files
//
//	.hsm/changes        reading it runs a query: the plain answer
//	.hsm/changes.json   reading it runs a query: a Header line, then one Entry per line
//	.hsm/ctl            write one Command; reading it gives usage and "last error: ..."
//	.hsm/status         one Status object
//	.hsm/consumers/NAME/{changes,changes.json,ctl}   a named consumer's own
//
// The default consumer is .hsm itself; its name in lists is "default".
//
// # Concurrency
//
// A Client holds no state but its paths: it is safe for concurrent use,
// and each call is one open of a control file. Two calls never share an
// answer: every open of a changes file is a query of its own.
//
// # Durability
//
// The client adds nothing to the mount's guarantees and takes nothing
// away: a write to ctl returns once the mount made the command durable,
// and Bless returns only after that write returned. A failed command is
// reported with the reason that ctl keeps, so that a caller never has to
// guess whether a bless happened: it did if and only if Bless returned
// nil.
package hsmctl
