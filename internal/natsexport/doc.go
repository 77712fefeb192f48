// Package natsexport is the fleet's NATS side. `hsmfs export` publishes
// the answers of one consumer of one hsmfs mount into a NATS JetStream
// stream, one message per path, and blesses each answer once the stream
// holds all of it. `hsmfs follow` (follow.go) reads them back and keeps
// a copy of the mount, acknowledging an answer only once it is copied
// (followcopy.go), from a local or a host:path SOURCE (followsource.go),
// with rsync run as hsmfs sync runs it (internal/sync's Rsync).
// docs/fleet.md is the operator's view; this is the implementer's.
//
// A Follower's round runs on its caller's goroutine; a second goroutine
// marks the held messages in progress while it runs, and reads them
// under Follower.mu, which guards open and whole (a leaf lock).
//
// # What it owns
//
// The only package of the module that imports the NATS client
// (the module's layering_test.go checks it). It talks to hsmfs through the
// control files alone, as any consumer does: it reads
// MOUNTPOINT/.hsm/changes.json (or .hsm/consumers/NAME/changes.json) and
// writes "bless ID" to the ctl beside it. It owns the subject scheme
// (Subject, Token), the message format (the changes.json object with
// host, mount, consumer, query, count, recovered and index put in front),
// the message id (msgID), the stream it may create (streamConfig) and the
// checks made before the first query (New).
//
// # Concurrency
//
// An Exporter runs one round at a time. Within a round, the caller's
// goroutine reads the answer line by line and publishes each message
// asynchronously; a collector goroutine waits for the acks in order and
// retries what fails. A channel of MaxInflight futures between them bounds
// the messages in flight, and so the memory: a message is kept only until
// its ack (a million-path answer is never held whole). The NATS client has
// goroutines of its own (reconnects, acks, its error callback, which
// stores the last permissions violation in an atomic).
//
// # Why nothing is lost (the delivery argument)
//
// hsmfs keeps the records of a path until a bless of a query at or after
// the one that answered it (docs/usage.md, "Bless"). The exporter writes
// "bless Q" only after the stream has acknowledged (PubAck) a message for
// every path of answer Q: the header's count is checked against the lines
// read, so an answer cut short is never blessed, and every failure before
// the bless (a read error, a refused or timed-out publish, a signal)
// returns without blessing. A PubAck means the stream stored the message
// (on a quorum of its replicas when it has several). So a path whose
// record hsmfs discards is in the stream: no change is lost between a
// mount and the stream, whatever crashes happen. What the stream does
// with the message afterwards is the stream's limits' business; New warns
// about limits that remove messages nobody may have read.
//
// Delivery is at least once. A round that fails after some messages were
// stored leaves them in the stream, and the next round's answer (a new
// query id) lists the same paths again. Within one answer, a publish whose
// ack did not come is retried with the same Nats-Msg-Id, so the stream
// stores it once if both attempts arrive within its duplicate window:
// exactly once within the window, per answer. Readers must therefore be
// idempotent; for a mirror, copying a listed path again is always safe.
package natsexport
