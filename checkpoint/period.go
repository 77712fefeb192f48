package checkpoint

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// periods is the SRCU-like handover between periods.
//
// A modification enters the current period p by incrementing
// inflight[p&1] and then re-reading cur: if cur moved on meanwhile, it
// backs out and retries. A query stores cur = P (all new modifications go
// to P from then on) and waits for inflight[(P-1)&1] to drain. Because the
// modification re-reads cur after its increment (both sequentially
// consistent atomics), either the query's wait sees the increment, or the
// modification sees the new period and retries in P. Two slots suffice
// because queries are serialised (Tracker.qmu) and each one drains the
// previous period before the next one can start.
//
// The hot path (enter/exit) takes no lock and allocates nothing.
type periods struct {
	cur      atomic.Uint64
	inflight [2]atomic.Int64
	// sets holds the dedup set of the current and the previous period,
	// by parity. A set is replaced only after its period has drained.
	sets [2]atomic.Pointer[dedupSet]
}

func (ps *periods) enter() uint64 {
	for {
		p := ps.cur.Load()
		ps.inflight[p&1].Add(1)
		if ps.cur.Load() == p {
			return p
		}
		ps.exit(p)
	}
}

func (ps *periods) exit(p uint64) { ps.inflight[p&1].Add(-1) }

func (ps *periods) set(p uint64) *dedupSet { return ps.sets[p&1].Load() }

// switchTo makes P current and waits until every modification that
// entered an earlier period has left. New modifications are not blocked.
func (ps *periods) switchTo(P uint64) {
	ps.sets[P&1].Store(newDedupSet(P))
	old := ps.cur.Swap(P)
	if old == P {
		return
	}
	slot := &ps.inflight[old&1]
	for wait := time.Microsecond; slot.Load() != 0; {
		if wait < time.Millisecond {
			runtime.Gosched()
			wait *= 2
			continue
		}
		time.Sleep(wait)
		if wait < 4*time.Millisecond {
			wait *= 2
		}
	}
	// Nothing can enter the old period any more: its dedup set (a
	// million entries after a big untar) can go now rather than at the
	// next query. Entries that handles still hold stay alive through
	// them.
	ps.sets[old&1].Store(nil)
}

func (ps *periods) inFlight() int64 { return ps.inflight[0].Load() + ps.inflight[1].Load() }

// dedupKey identifies "this kind of modification of these names". Within
// one period a second modification with the same key needs no new
// durable intent: the first one already says the names may change in
// this period.
type dedupKey struct {
	op    Op
	flags uint8  // a rename of a file and one of a directory differ
	ino   uint64 // another file under the same name needs its own record (hard links)
	// the directories by inode: a directory replaced under the same
	// name in one period has other edges (oldnames.go)
	parent, parent2, ino2 uint64
	path                  string
	path2                 string
}

const dedupShards = 32

// dedupSet is the in-memory index of the intents of one period: the
// durable ones by their key, and the fine records (coarse mode) by a
// 128-bit keyed hash of it.
//
// A fine record's entry is only "already queued": holding its key whole
// (48 bytes and the path's bytes, in a map) cost most of a period's
// memory with a million new files. Two different keys share a fineKey
// with a probability of about n²/2^129 for n keys in a period, 10^-25
// for ten million (the seeds are random per process, so no input can be
// made to collide); a collision would leave a modification without its
// fine record.
type dedupSet struct {
	period uint64
	shards [dedupShards]struct {
		mu   sync.Mutex // guards m and fine
		m    map[dedupKey]*sharedIntent
		fine map[fineKey]struct{}
		_    [40]byte // 64 bytes a shard (mutex 8, maps 8 each): no two share a cache line
	}
}

// fineKey is a fine record's key in a dedupSet (fineKeyOf).
type fineKey [2]uint64

var fineSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func fineKeyOf(k *dedupKey) fineKey {
	var out fineKey
	var ino [8]byte
	binary.LittleEndian.PutUint64(ino[:], k.ino)
	for i, seed := range fineSeeds {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteByte(byte(k.op))
		h.WriteByte(k.flags)
		h.Write(ino[:])
		h.WriteString(k.path)
		h.WriteByte(0) // no path holds a NUL
		h.WriteString(k.path2)
		out[i] = h.Sum64()
	}
	return out
}

// putFineIfAbsent notes the fine record of k, and reports whether the
// period needs it: no fine record and no durable intent of k yet.
func (s *dedupSet) putFineIfAbsent(k dedupKey) bool {
	fk := fineKeyOf(&k)
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.fine[fk]; ok || sh.m[k] != nil {
		return false
	}
	sh.fine[fk] = struct{}{}
	return true
}

func newDedupSet(p uint64) *dedupSet {
	s := &dedupSet{period: p}
	for i := range s.shards {
		s.shards[i].m = make(map[dedupKey]*sharedIntent)
		s.shards[i].fine = make(map[fineKey]struct{})
	}
	return s
}

func (s *dedupSet) shard(k *dedupKey) int {
	// FNV-1a over the path: cheap, no allocation.
	h := uint32(2166136261)
	for i := 0; i < len(k.path); i++ {
		h ^= uint32(k.path[i])
		h *= 16777619
	}
	return int((h ^ uint32(k.op)) % dedupShards)
}

// get returns the entry of k, or nil.
func (s *dedupSet) get(k dedupKey) *sharedIntent {
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[k]
}

// putIfAbsent stores e under k unless k has an entry, and reports
// whether it stored e.
func (s *dedupSet) putIfAbsent(k dedupKey, e *sharedIntent) bool {
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[k] != nil {
		return false
	}
	sh.m[k] = e
	return true
}

// remove forgets k.
func (s *dedupSet) remove(k dedupKey) {
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	delete(sh.m, k)
	sh.mu.Unlock()
}

// keyOf is the dedup key of an intent or of a record's fields.
func keyOf(op Op, flags uint8, ino uint64, path, path2 string) dedupKey {
	return dedupKey{op: op, flags: flags, ino: ino, path: path, path2: path2}
}

// keyOfIntent is the dedup key of an intent, its directories included.
func keyOfIntent(in *Intent) dedupKey {
	return dedupKey{op: in.Op, flags: in.Flags, ino: in.Ino, parent: in.Parent, parent2: in.Parent2,
		ino2: in.Ino2, path: in.Path, path2: in.Path2}
}

// keyOfRecord is keyOfIntent of the intent that r records.
func keyOfRecord(r *Record) dedupKey {
	return dedupKey{op: r.Op, flags: r.Flags, ino: r.Ino, parent: r.Parent, parent2: r.Parent2,
		ino2: r.Ino2, path: r.Path, path2: r.Path2}
}

// sharedIntent is one durable intent and the modifications that share it
// (the dedup set holds them; Entry, an answer row, is unrelated).
type sharedIntent struct {
	rec   Record
	ready chan struct{} // closed once the intent is durable or failed
	err   error         // set before ready is closed
	// roster is an OpRoster entry's names (roster.go); set before ready is
	// closed.
	roster *roster
	// census is an OpEntries entry's census (newdirs.go): set
	// once, durable before it is set, never changed.
	census   atomic.Pointer[[]string]
	censusMu sync.Mutex // held while the census is read and appended

	mu        sync.Mutex // guards refs, completed and queued, and orders Complete/Reopen I/O
	refs      int        // modifications (and open handles) currently using this intent
	completed bool       // a completion is recorded in the store
	queued    bool       // on the completer's list
	idleSince time.Time  // when refs last dropped to 0
}
