// Package metrics serves the Prometheus metrics of a mount (`hsmfs mount
// --metrics ADDR`). It is the only package of the project that imports
// client_golang: the core packages expose plain numbers and hooks, and
// this package turns them into metrics. docs/usage.md ("Metrics") lists
// every metric.
//
// # What it owns
//
//   - one prometheus.Registry per mount (never the global one, so that
//     nothing a library registers by side effect is exported), with the
//     Go and process collectors and hsmfs_build_info;
//   - the metrics pushed by hooks (metrics.go): the journal's sync
//     latency (journal.Options.OnSync), the duration of queries and
//     blesses and the size of answers (checkpoint.Options.OnQuery,
//     OnBless), and the operations refused because the journal could not
//     record their intent (fs.Config.OnJournalError);
//   - a collector (collector.go) that reads the rest at scrape time: the
//     tracker's counters and gauges, the pending paths (a scan of the
//     journal, cached: see pendingReuse) and the journal's size on disk;
//   - the HTTP server (server.go), which serves /metrics only.
//
// # Cost
//
// No hook is on the per-modification hot path: OnSync runs once per
// journal sync (on the committer, after the sync), OnQuery and OnBless
// once per query and bless, OnJournalError once per refused operation.
// Each is a histogram observation or a counter increment (atomics, no
// lock, no allocation; the errno counter looks its label up in a map).
// The cost of a scrape is the journal scan behind the pending gauges,
// bounded by the cache.
//
// # Concurrency
//
// The hooks may be called from any goroutine, also while a scrape runs.
// Scrapes may run concurrently (the HTTP server admits two at a time);
// the pending cache has a mutex, held across the scan, so that one scan
// runs at a time and concurrent scrapes share it. The collector reads
// the tracker and the journal through methods that are safe for
// concurrent use. Watch must be called before Serve.
package metrics
