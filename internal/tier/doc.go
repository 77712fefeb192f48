// Package tier owns hsmfs's archive destinations: the slower storage that
// a file's content is copied to before its local blocks are freed, and
// restored from on open. A tier is a flat set of named, immutable-once-
// written objects; Open turns a tier URL (dir:///PATH or s3://BUCKET/PREFIX)
// into a Tier. The package knows nothing of files, inodes or the journal:
// the caller (internal/hsm) names objects and records which file owns which.
//
// # Concurrency
//
// Every method of every Tier is safe for concurrent use, including
// concurrent Puts of different names. Concurrent Puts of the same name
// are not an error, and one of them wins whole: neither backend can leave
// a mix of the two (dir renames a complete file over the name; S3 PUTs
// are atomic per object). The caller never does that anyway: it gives
// each archive a new name.
//
// # Durability
//
// Released files depend on the tier copy, so the one promise that matters
// is this: when Put returns nil, the object is complete and durable.
//
//   - dir: Put writes a temporary file in the tier's directory, checks that
//     exactly size bytes came from the reader, fsyncs the file,
//     renames it over the name and fsyncs the directory. A crash before the
//     rename leaves at most a temporary (".tmp-*", never listed); a crash
//     after it leaves either the old or the new object, both whole; the
//     directory fsync makes the rename itself survive a crash before Put
//     returns. Remove fsyncs the directory too.
//   - s3: Put is one PutObject with the exact size (a multipart upload above
//     16 MiB, aborted on error). S3 makes an object visible only when its
//     PUT or CompleteMultipartUpload has succeeded, and then it is stored
//     durably by the service: that success is Put's nil. Every part carries
//     a Content-MD5, so the server refuses bytes damaged on the way.
//
// On error, Put leaves no partial object under the name, and any object
// that had that name before is left as it was. What may remain is a
// temporary: a dir tier's ".tmp-NAME-*" file (List removes those not
// written for an hour), or an S3 multipart upload that could not even be
// aborted (a bucket lifecycle rule for incomplete uploads reclaims them).
//
// # Credentials
//
// A tier URL never holds a secret: Open refuses access keys in its
// userinfo or query, so that a URL can be logged, shown by String and
// kept in a mount's configuration. S3 credentials come from the
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
// or from an AWS shared credentials file.
package tier
