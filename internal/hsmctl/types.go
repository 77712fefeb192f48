package hsmctl

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Header is the first line of changes.json. docs/usage.md documents
// each field; a field that is not set here is absent from the line.
type Header struct {
	Query   uint64 `json:"query"`
	Blessed uint64 `json:"blessed"` // the consumer's last completed bless; 0: never
	// BlessedBy is who made that bless ("by WHO"); "" when the bless
	// named no one (a plain "bless", or an older hsmfs).
	BlessedBy string `json:"blessed_by,omitempty"`
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
	// Full: the paths cannot update a copy; copy the whole tree once,
	// then bless with "full". Reset: the lag policy dropped the
	// consumer's backlog.
	Full bool `json:"full,omitempty"`
	// FullWhy says why, when the answer is full because its paths
	// would have passed the bound (it then holds no path).
	FullWhy  string `json:"full_why,omitempty"`
	Reset    bool   `json:"reset,omitempty"`
	Consumer string `json:"consumer,omitempty"`
	// What the check at mount for changes made around hsmfs did.
	OutsideCheck string `json:"outside_check,omitempty"`
	OutsideFound int    `json:"outside_found,omitempty"`
}

// Entry is one path of changes.json.
type Entry struct {
	Path     string   `json:"path"`
	PathB64  string   `json:"path_b64,omitempty"` // the raw bytes of a path that is not UTF-8
	Type     string   `json:"type"`               // file, dir, symlink, other, gone
	Ops      []string `json:"ops"`
	Period   uint64   `json:"period"`
	Inflight bool     `json:"inflight"`
	Ino      uint64   `json:"ino"`
	Nlink    uint32   `json:"nlink"`
	Inos     []uint64 `json:"inos,omitempty"`
	Shadowed bool     `json:"shadowed,omitempty"` // beneath an ancestor that is not a directory any more
}

// DecodeEntry parses one entry line; Path holds the raw name, decoded
// from path_b64 where the line has it.
func DecodeEntry(line []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(line, &e); err != nil {
		return e, fmt.Errorf("bad entry %.80q: %w", line, err)
	}
	if e.PathB64 != "" {
		raw, err := base64.StdEncoding.DecodeString(e.PathB64)
		if err != nil {
			return e, fmt.Errorf("bad path_b64 %q: %w", e.PathB64, err)
		}
		e.Path = string(raw)
	}
	return e, nil
}

// Status is .hsm/status.
type Status struct {
	Pid        int    `json:"pid"`
	Backing    string `json:"backing"`
	Mountpoint string `json:"mountpoint"`
	Journal    string `json:"journal"`
	// Mounted is when the mount went live (unix seconds).
	Mounted       int64  `json:"mounted"`
	CurrentPeriod uint64 `json:"current_period"`
	// The default consumer's last query and bless (as in Consumers).
	LastQuery    uint64 `json:"last_query"`
	LastBlessed  uint64 `json:"last_blessed"`
	PendingPaths int    `json:"pending_paths"`
	InFlight     int64  `json:"inflight"`
	OpenForWrite int    `json:"open_for_write"`
	// Recovered: the run began after a crash, and the default consumer
	// has not blessed past it.
	Recovered    bool   `json:"recovered"`
	JournalSyncs uint64 `json:"journal_syncs"`
	Run          uint64 `json:"run"`
	// OldNameFallbacks counts this run's queries whose old names could
	// not be found by inode and took the path rule (records of an older
	// hsmfs, or fine records that a crash may have lost).
	OldNameFallbacks uint64 `json:"old_name_fallbacks"`
	// OldNamesCapped counts this run's queries whose listing beneath
	// names that are not directories now passed its budget
	// (docs/design.md, "What a copy may hold beneath a name").
	OldNamesCapped uint64 `json:"old_names_capped"`
	// WholeAnswers counts this run's answers that said full rather
	// than list more paths than the bound allows (docs/usage.md,
	// "Answers that say full").
	WholeAnswers uint64 `json:"whole_answers"`
	// Nodes is how many nodes the kernel and hsmfs hold, and NodesPruned
	// how many times the node budget named one for the kernel to forget
	// (docs/usage.md, "Memory: the node budget").
	Nodes       int    `json:"nodes"`
	NodesPruned uint64 `json:"nodes_pruned"`
	// The journal's file system: free bytes, and the reserve below which
	// every modification fails with ENOSPC (JournalLow).
	JournalFree    uint64           `json:"journal_free_bytes"`
	JournalReserve uint64           `json:"journal_reserve_bytes"`
	JournalLow     bool             `json:"journal_low"`
	OutsideCheck   string           `json:"outside_check,omitempty"`
	OutsideFound   int              `json:"outside_found"`
	Metrics        string           `json:"metrics,omitempty"` // the address of --metrics
	Consumers      []ConsumerStatus `json:"consumers"`
	// Tiers are the archive tiers; HSM counts the files (and their
	// archived bytes) per HSM state: archived, released, dirty, ...
	Tiers []Tier     `json:"tiers"`
	HSM   *HSMCounts `json:"hsm,omitempty"`
}

// HSMCounts are the files per HSM state, and their bytes.
type HSMCounts struct {
	Files map[string]int64 `json:"files"`
	Bytes map[string]int64 `json:"bytes"`
}

// ConsumerStatus is one consumer in Status and in consumer list; the
// default consumer comes first.
type ConsumerStatus struct {
	Name        string `json:"name"`
	LastQuery   uint64 `json:"last_query"`
	LastBlessed uint64 `json:"last_blessed"`
	// Unix seconds; 0: never.
	LastQueryTime int64  `json:"last_query_time"`
	LastBlessTime int64  `json:"last_bless_time"`
	BlessedBy     string `json:"blessed_by,omitempty"`
	PendingPaths  int    `json:"pending_paths"`
	// OldestUnblessed is the age in seconds of its oldest unblessed
	// change (0: none).
	OldestUnblessed float64 `json:"oldest_unblessed_seconds"`
	Full            bool    `json:"full"`
	Reset           bool    `json:"reset"`
	Lagging         bool    `json:"lagging"`
}

// BytesIEC shows a size as 12.3 GiB (status, hsm run).
func BytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
